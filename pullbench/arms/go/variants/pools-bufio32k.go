// Variant "pools-bufio32k": the reviewer's alternative on moby/moby#48602 (and the shape of
// moby/moby#48605): a pooled 32 KiB bufio.Writer in front of the temp file and pools.Copy, which
// copies through a pooled 32 KiB buffer (moby/moby:pkg/pools/pools.go). Written by pullbench.
//
// It replaces, in moby/moby:distribution/pull_v2.go (*v2LayerDescriptor).Download,
//
//	_, err = io.Copy(tmpFile, io.TeeReader(reader, ld.verifier))
//
// with a call of the function below. The writer is hidden behind struct{ io.Writer }: given the
// bare *bufio.Writer, io.CopyBuffer would call its ReadFrom, which hands the copy to
// (*os.File).ReadFrom while the buffer is empty, and the build would behave as stock. Hidden, the
// writes are coalesced to 32 KiB: the same as stock over plain HTTP (reads are already 32 KiB),
// two TLS records per write over TLS. Flushed on success and on error (see pr48602.go).
//
// pullbench:variant pools-bufio32k
// pullbench:func pullbenchCopyPoolsBufio32k
package distribution

import (
	"io"

	"github.com/docker/docker/pkg/pools"
)

//go:noinline
func pullbenchCopyPoolsBufio32k(dst io.Writer, src io.Reader) (int64, error) {
	bw := pools.BufioWriter32KPool.Get(dst)
	defer pools.BufioWriter32KPool.Put(bw)
	n, err := pools.Copy(struct{ io.Writer }{bw}, src)
	if flushErr := bw.Flush(); err == nil {
		err = flushErr
	}
	return n, err
}
