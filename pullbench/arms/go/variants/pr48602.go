// Variant "pr48602": the change moby/moby#48602 proposed for the layer download loop, written by
// pullbench from the mechanism the PR and its review describe (not the PR's code).
//
// It replaces, in moby/moby:distribution/pull_v2.go (*v2LayerDescriptor).Download,
//
//	_, err = io.Copy(tmpFile, io.TeeReader(reader, ld.verifier))
//
// with a call of the function below:
//   - a 512 KiB copy buffer instead of io.Copy's 32 KiB (golang/go:src/io/io.go);
//   - a 512 KiB bufio.Writer in front of the temp file, so each write(2) carries 512 KiB;
//   - both ReadFrom shortcuts hidden with struct{ io.Writer }: io.CopyBuffer would otherwise hand
//     the copy to bufio.Writer.ReadFrom, which hands it to (*os.File).ReadFrom while its buffer is
//     empty (always, here), and that is a 32 KiB io.Copy for a socket source: neither buffer
//     would be used (golang/go#16474; golang/go:src/bufio/bufio.go);
//   - the writer is flushed before the function returns, on success and on error, so the file
//     holds every byte the digest verifier has seen: the file is used right after the copy and a
//     resumed download continues from its end.
//
// pullbench:variant pr48602
// pullbench:func pullbenchCopyPR48602
package distribution

import (
	"bufio"
	"io"
)

const pr48602BufferSize = 512 << 10

//go:noinline
func pullbenchCopyPR48602(dst io.Writer, src io.Reader) (int64, error) {
	bw := bufio.NewWriterSize(dst, pr48602BufferSize)
	n, err := io.CopyBuffer(struct{ io.Writer }{bw}, src, make([]byte, pr48602BufferSize))
	if flushErr := bw.Flush(); err == nil {
		err = flushErr
	}
	return n, err
}
