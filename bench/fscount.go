package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"cloud.google.com/go/firestore/apiv1/firestorepb"
	"google.golang.org/protobuf/proto"
)

// WriteCounter is a gRPC proxy in front of the Firestore emulator that
// counts the document writes passing through it, as Firestore bills them:
// every write of a Commit (also a transaction's) and of a BatchWrite. A
// process pointed at it (FIRESTORE_EMULATOR_HOST=Addr) is counted at the
// store, whatever its code believes it writes.
type WriteCounter struct {
	// Addr is the proxy's host:port.
	Addr string

	srv    *http.Server
	writes atomic.Int64
	mu     sync.Mutex
	rpcs   map[string]int64
	byColl map[string]int64 // writes by collection path
}

// NewWriteCounter starts a proxy to the emulator at target (host:port) on
// a free loopback port.
func NewWriteCounter(target string) (*WriteCounter, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("write counter: %w", err)
	}
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	c := &WriteCounter{Addr: l.Addr().String(), rpcs: map[string]int64{}, byColl: map[string]int64{}}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: target})
			r.Out.Host = r.In.Host
		},
		Transport:     &http.Transport{Protocols: &h2c, ForceAttemptHTTP2: true},
		FlushInterval: -1, // streams (Listen) flow at once
	}
	c.srv = &http.Server{Protocols: &h2c, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		c.mu.Lock()
		c.rpcs[method]++
		c.mu.Unlock()
		if method == "Commit" || method == "BatchWrite" {
			r.Body = &frameCounter{r: r.Body, method: method, add: func(colls []string) {
				c.writes.Add(int64(len(colls)))
				c.mu.Lock()
				for _, k := range colls {
					c.byColl[k]++
				}
				c.mu.Unlock()
			}}
		}
		proxy.ServeHTTP(w, r)
	})}
	go c.srv.Serve(l)
	return c, nil
}

// Writes returns the document writes counted so far.
func (c *WriteCounter) Writes() int64 { return c.writes.Load() }

// RPCs returns the calls counted so far by method name ("Commit",
// "BeginTransaction", "RunQuery", ...).
func (c *WriteCounter) RPCs() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.rpcs))
	for k, v := range c.rpcs {
		out[k] = v
	}
	return out
}

// WritesByCollection returns the writes counted so far by collection path
// ("jobs", "jobs/events": document ids left out).
func (c *WriteCounter) WritesByCollection() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.byColl)
}

// Close stops the proxy.
func (c *WriteCounter) Close() error { return c.srv.Close() }

// frameCounter reads a gRPC request body (length-prefixed protobuf
// messages) through, counting the writes of each message.
type frameCounter struct {
	r      io.ReadCloser
	method string
	add    func(collections []string) // one per write
	buf    []byte
}

func (f *frameCounter) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	f.buf = append(f.buf, p[:n]...)
	for len(f.buf) >= 5 {
		size := int(binary.BigEndian.Uint32(f.buf[1:5]))
		if len(f.buf) < 5+size {
			break
		}
		msg := f.buf[5 : 5+size]
		if f.buf[0] == 0 { // not compressed
			f.add(countWrites(f.method, msg))
		}
		f.buf = f.buf[5+size:]
	}
	if errors.Is(err, io.EOF) {
		f.buf = nil
	}
	return n, err
}

func (f *frameCounter) Close() error { return f.r.Close() }

// countWrites returns the collection path of each write of a request.
func countWrites(method string, msg []byte) []string {
	var writes []*firestorepb.Write
	switch method {
	case "Commit":
		var m firestorepb.CommitRequest
		if proto.Unmarshal(msg, &m) == nil {
			writes = m.GetWrites()
		}
	case "BatchWrite":
		var m firestorepb.BatchWriteRequest
		if proto.Unmarshal(msg, &m) == nil {
			writes = m.GetWrites()
		}
	}
	out := make([]string, 0, len(writes))
	for _, w := range writes {
		name := w.GetUpdate().GetName()
		if name == "" {
			name = w.GetDelete()
		}
		if name == "" {
			name = w.GetTransform().GetDocument()
		}
		out = append(out, collectionPath(name))
	}
	return out
}

// collectionPath turns a document name
// (projects/p/databases/d/documents/jobs/j1/events/e1) into its
// collection path (jobs/events).
func collectionPath(doc string) string {
	_, rel, ok := strings.Cut(doc, "/documents/")
	if !ok {
		return "?"
	}
	parts := strings.Split(rel, "/")
	var colls []string
	for i := 0; i < len(parts); i += 2 {
		colls = append(colls, parts[i])
	}
	return strings.Join(colls, "/")
}
