// pullbench-gocopy: GET registry blobs and copy each body into a file with one exact Go idiom.
//
// The Go-native check of pullbench's Python imitations (pullbench/arms/_goharness.py builds it
// with the machine's Go toolchain, standard library only). Each idiom is the copy loop of a real
// program, written here from its mechanism:
//
//	iocopy             io.Copy(file, io.TeeReader(body, sha256)): dockerd's legacy layer download
//	                   (moby/moby:distribution/pull_v2.go). *os.File implements ReadFrom, which for
//	                   a non-file source falls back to a 32 KiB io.Copy loop (golang/go:src/os/file.go
//	                   genericReadFrom): one write per read, reads <= 32 KiB.
//	copybuffer         io.CopyBuffer(file, tee, make([]byte, read_size)): the buffer is ignored,
//	                   because io.CopyBuffer hands the copy to file.ReadFrom (golang/go#16474).
//	copybuffer-hidden  io.CopyBuffer(struct{ io.Writer }{file}, tee, buf): ReadFrom hidden, so reads
//	                   are <= read_size and each becomes one write.
//	bufio              io.Copy(bufio.NewWriterSize(file, write_size), tee) + Flush: bufio.Writer's
//	                   ReadFrom hands the copy to file.ReadFrom while its buffer is empty, i.e.
//	                   always here (golang/go:src/bufio/bufio.go): writes as iocopy.
//	bufio-hidden       io.CopyBuffer(struct{ io.Writer }{bufio.Writer(write_size)}, tee,
//	                   make([]byte, read_size)) + Flush: writes coalesced to write_size.
//	pr48602            bufio-hidden with 512 KiB / 512 KiB (moby/moby#48602).
//	pools-bufio32k     bufio-hidden with a pooled 32 KiB bufio.Writer and a pooled 32 KiB copy
//	                   buffer (the shape of moby/moby:pkg/pools BufioWriter32KPool + pools.Copy;
//	                   the pools here are sync.Pool, as there).
//	containerd-1m      containerd's content.Copy: io.ReadAtLeast fills a pooled 1 MiB buffer
//	                   (read_size), one Write per fill, the digest updated per write
//	                   (containerd/containerd:core/content/helpers.go copyWithBuffer).
//
// Writes are counted by a wrapper around the *os.File that keeps the file's ReadFrom behaviour:
// its ReadFrom is what (*os.File).ReadFrom does for every source that is not an *os.File
// (io.Copy through a Write-only view, 32 KiB buffer). -count=none copies into the bare *os.File
// (for timing, or to check the wrapper against strace).
//
// Output: one JSON object on stdout (see report below).
package main

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

type blobArg struct {
	digest string
	url    string
}

type blobList []blobArg

func (b *blobList) String() string { return fmt.Sprint(*b) }

func (b *blobList) Set(v string) error {
	digest, url, ok := strings.Cut(v, "=")
	if !ok || !strings.HasPrefix(digest, "sha256:") || len(digest) != 71 {
		return fmt.Errorf("-blob wants sha256:<64 hex>=URL, got %q", v)
	}
	*b = append(*b, blobArg{digest, url})
	return nil
}

type headerList []string

func (h *headerList) String() string     { return strings.Join(*h, ", ") }
func (h *headerList) Set(v string) error { *h = append(*h, v); return nil }

// sizes counts exact byte counts of reads or writes.
type sizes map[int]int

type countingFile struct {
	f      *os.File
	writes sizes
}

func (c *countingFile) Write(p []byte) (int, error) {
	n, err := c.f.Write(p)
	if len(p) > 0 {
		c.writes[len(p)]++
	}
	return n, err
}

// ReadFrom is (*os.File).ReadFrom for a source that is not an *os.File (no copy_file_range):
// io.Copy through a view that has only Write, with io.Copy's 32 KiB buffer.
func (c *countingFile) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{c}, r)
}

type countingReader struct {
	r     io.Reader
	reads sizes
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.reads[n]++
	}
	return n, err
}

var (
	bufio32kPool  = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}
	buffer32kPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
	buffer1mPool  sync.Pool
)

// copyBody runs one idiom: dst is the file (or its counting wrapper), body the response body,
// digester the sha256 the copy feeds (as dockerd's verifier or containerd's content writer).
func copyBody(idiom string, dst io.Writer, body io.Reader, digester io.Writer, readSize, writeSize int) (int64, error) {
	tee := io.TeeReader(body, digester)
	switch idiom {
	case "iocopy":
		return io.Copy(dst, tee)
	case "copybuffer":
		return io.CopyBuffer(dst, tee, make([]byte, readSize))
	case "copybuffer-hidden":
		return io.CopyBuffer(struct{ io.Writer }{dst}, tee, make([]byte, readSize))
	case "bufio":
		bw := bufio.NewWriterSize(dst, writeSize)
		n, err := io.Copy(bw, tee)
		if ferr := bw.Flush(); err == nil {
			err = ferr
		}
		return n, err
	case "bufio-hidden", "pr48602":
		if idiom == "pr48602" {
			readSize, writeSize = 512<<10, 512<<10
		}
		bw := bufio.NewWriterSize(dst, writeSize)
		n, err := io.CopyBuffer(struct{ io.Writer }{bw}, tee, make([]byte, readSize))
		if ferr := bw.Flush(); err == nil {
			err = ferr
		}
		return n, err
	case "pools-bufio32k":
		bw := bufio32kPool.Get().(*bufio.Writer)
		bw.Reset(dst)
		defer func() { bw.Reset(nil); bufio32kPool.Put(bw) }()
		buf := buffer32kPool.Get().(*[]byte)
		defer buffer32kPool.Put(buf)
		n, err := io.CopyBuffer(struct{ io.Writer }{bw}, tee, *buf)
		if ferr := bw.Flush(); err == nil {
			err = ferr
		}
		return n, err
	case "containerd-1m":
		return fillCopy(dst, body, digester, readSize)
	}
	return 0, fmt.Errorf("unknown idiom %q", idiom)
}

// fillCopy: io.ReadAtLeast until the buffer is full (or the body ends), then one Write; the
// digest is updated with what was written.
func fillCopy(dst io.Writer, body io.Reader, digester io.Writer, size int) (int64, error) {
	bufp, _ := buffer1mPool.Get().(*[]byte)
	if bufp == nil || len(*bufp) != size {
		b := make([]byte, size)
		bufp = &b
	}
	defer buffer1mPool.Put(bufp)
	buf := *bufp
	var written int64
	for {
		nr, er := io.ReadAtLeast(body, buf, len(buf))
		if nr > 0 {
			nw, ew := dst.Write(buf[:nr])
			digester.Write(buf[:nw])
			written += int64(nw)
			if ew != nil {
				return written, ew
			}
			if nw != nr {
				return written, io.ErrShortWrite
			}
		}
		if er != nil {
			if er == io.EOF || er == io.ErrUnexpectedEOF {
				return written, nil
			}
			return written, er
		}
	}
}

type blobReport struct {
	Digest     string         `json:"digest"`
	Path       string         `json:"path"`
	Bytes      int64          `json:"bytes"`
	Seconds    float64        `json:"seconds"`
	TTFB       float64        `json:"ttfb_seconds"`
	Proto      string         `json:"proto"`
	WriteSizes map[string]int `json:"write_sizes,omitempty"`
	ReadSizes  map[string]int `json:"read_sizes,omitempty"`
}

type report struct {
	Idiom     string       `json:"idiom"`
	ReadSize  int          `json:"read_size"`
	WriteSize int          `json:"write_size"`
	GoVersion string       `json:"go_version"`
	Seconds   float64      `json:"seconds"`
	Blobs     []blobReport `json:"blobs"`
	Error     string       `json:"error,omitempty"`
}

func toJSONCounts(s sizes) map[string]int {
	out := make(map[string]int, len(s))
	for k, v := range s {
		out[fmt.Sprint(k)] = v
	}
	return out
}

func fetch(client *http.Client, headers headerList, b blobArg, dir, idiom, count string, readSize, writeSize int) (blobReport, error) {
	rep := blobReport{Digest: b.digest}
	req, err := http.NewRequest(http.MethodGet, b.url, nil)
	if err != nil {
		return rep, err
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return rep, err
	}
	defer resp.Body.Close()
	rep.TTFB = time.Since(start).Seconds()
	rep.Proto = resp.Proto
	if resp.StatusCode != http.StatusOK {
		return rep, fmt.Errorf("GET %s: HTTP %d", b.url, resp.StatusCode)
	}
	hexDigest := b.digest[len("sha256:"):]
	final := filepath.Join(dir, hexDigest)
	f, err := os.CreateTemp(dir, ".GetImageBlob")
	if err != nil {
		return rep, err
	}
	tmpName := f.Name()
	defer func() {
		f.Close()
		os.Remove(tmpName)
	}()
	digester := sha256.New()
	var dst io.Writer = f
	var cf *countingFile
	var cr *countingReader
	var body io.Reader = resp.Body
	if count == "wrapper" {
		cf = &countingFile{f: f, writes: sizes{}}
		cr = &countingReader{r: resp.Body, reads: sizes{}}
		dst, body = cf, cr
	}
	n, err := copyBody(idiom, dst, body, digester, readSize, writeSize)
	rep.Bytes = n
	if err != nil {
		return rep, err
	}
	if got := hex.EncodeToString(digester.Sum(nil)); got != hexDigest {
		return rep, fmt.Errorf("digest mismatch for %s: got sha256:%s", b.digest, got)
	}
	if err := f.Close(); err != nil {
		return rep, err
	}
	if err := os.Rename(tmpName, final); err != nil {
		return rep, err
	}
	rep.Seconds = time.Since(start).Seconds()
	rep.Path = final
	if cf != nil {
		rep.WriteSizes = toJSONCounts(cf.writes)
		rep.ReadSizes = toJSONCounts(cr.reads)
	}
	return rep, nil
}

func main() {
	var blobs blobList
	var headers headerList
	idiom := flag.String("idiom", "iocopy", "copy idiom (see the source)")
	readSize := flag.Int("read-size", 32<<10, "copy buffer size, bytes (copybuffer*, bufio-hidden, containerd-1m)")
	writeSize := flag.Int("write-size", 32<<10, "bufio.Writer size, bytes (bufio, bufio-hidden)")
	ca := flag.String("ca", "", "PEM CA bundle to trust for https:// URLs (default: the system's)")
	dir := flag.String("dir", ".", "directory the blobs are written to (<dir>/<hex digest>)")
	count := flag.String("count", "wrapper", "wrapper: count reads and writes; none: bare *os.File")
	flag.Var(&blobs, "blob", "sha256:<hex>=URL (repeatable)")
	flag.Var(&headers, "header", "extra request header 'Name: value' (repeatable)")
	flag.Parse()
	switch *idiom { // the fixed sizes of the named idioms
	case "iocopy", "bufio":
		*readSize = 32 << 10
	case "pr48602":
		*readSize, *writeSize = 512<<10, 512<<10
	case "pools-bufio32k":
		*readSize, *writeSize = 32<<10, 32<<10
	case "containerd-1m":
		set := false
		flag.Visit(func(f *flag.Flag) { set = set || f.Name == "read-size" })
		if !set {
			*readSize = 1 << 20
		}
	}
	rep := report{Idiom: *idiom, ReadSize: *readSize, WriteSize: *writeSize, GoVersion: runtime.Version()}
	fail := func(err error) {
		rep.Error = err.Error()
		_ = json.NewEncoder(os.Stdout).Encode(rep)
		os.Exit(1)
	}
	if *count != "wrapper" && *count != "none" {
		fail(fmt.Errorf("-count must be wrapper or none, got %q", *count))
	}
	if _, err := copyBody(*idiom, io.Discard, strings.NewReader(""), io.Discard, 1, 1); err != nil {
		fail(err)
	}
	if *readSize <= 0 || *writeSize <= 0 {
		fail(errors.New("-read-size and -write-size must be positive"))
	}
	tlsConfig := &tls.Config{}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			fail(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fail(fmt.Errorf("no certificate in %s", *ca))
		}
		tlsConfig.RootCAs = pool
	}
	transport := &http.Transport{
		Proxy:               nil, // loopback and emulated links only: never a proxy from the environment
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsConfig,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
	}
	client := &http.Client{Transport: transport}
	start := time.Now()
	for _, b := range blobs {
		br, err := fetch(client, headers, b, *dir, *idiom, *count, *readSize, *writeSize)
		if err != nil {
			fail(err)
		}
		rep.Blobs = append(rep.Blobs, br)
	}
	rep.Seconds = time.Since(start).Seconds()
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		os.Exit(2)
	}
}
