// Variant "bufio": the pr48602 mechanism with both sizes as parameters, for sweeps. Written by
// pullbench.
//
// It replaces, in moby/moby:distribution/pull_v2.go (*v2LayerDescriptor).Download,
//
//	_, err = io.Copy(tmpFile, io.TeeReader(reader, ld.verifier))
//
// with a call of the function below: a read_size copy buffer, a write_size bufio.Writer, both
// ReadFrom shortcuts hidden with struct{ io.Writer } (see pr48602.go for why), flushed on success
// and on error. read_size=524288 write_size=524288 is pr48602; 32768/32768 behaves as
// pools-bufio32k without the pools.
//
// The constants marked "pullbench:param" are set by `pullbench dockerd build bufio --param`.
//
// pullbench:variant bufio
// pullbench:func pullbenchCopyBufio
package distribution

import (
	"bufio"
	"io"
)

const bufioReadSize = 32768 // pullbench:param read_size

const bufioWriteSize = 524288 // pullbench:param write_size

//go:noinline
func pullbenchCopyBufio(dst io.Writer, src io.Reader) (int64, error) {
	bw := bufio.NewWriterSize(dst, bufioWriteSize)
	n, err := io.CopyBuffer(struct{ io.Writer }{bw}, src, make([]byte, bufioReadSize))
	if flushErr := bw.Flush(); err == nil {
		err = flushErr
	}
	return n, err
}
