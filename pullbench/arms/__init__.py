"""Arms pullbench does not own: any command, skopeo, containerd, dockerd and its built variants,
and the Go harness. The experiment runner treats them like copy strategies.
"""
