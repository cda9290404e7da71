// Variant "stock": dockerd exactly as the source ships it; the file adds nothing to the build.
//
// Mirrors moby/moby:distribution/pull_v2.go (*v2LayerDescriptor).Download in moby 20.10:
//
//	_, err = io.Copy(tmpFile, io.TeeReader(reader, ld.verifier))
//
// io.Copy sees that *os.File implements io.ReaderFrom and hands it the copy; for a network
// source (*os.File).ReadFrom falls back to a 32 KiB io.Copy loop (golang/go:src/os/file.go
// genericReadFrom, Go 1.19), so each write(2) carries what one read returned: 32 KiB over plain
// HTTP on loopback, at most one TLS record (16 KiB) over TLS.
//
// pullbench:variant stock
package distribution
