"""External pullers run as arms: real dockerd builds, the Go copy harness, ..."""
