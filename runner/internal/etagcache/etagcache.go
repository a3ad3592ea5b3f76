// Package etagcache makes GitHub API reads conditional: a Transport
// remembers the ETag and body of each GET answered 200 and sends the ETag
// back as If-None-Match the next time; GitHub answers 304 Not Modified,
// which does not count against the rate limit, and the Transport serves
// the remembered body as the 200 it stands for. The runner's periodic
// reads (hook deliveries, deployments) are mostly unchanged, so most of
// them cost nothing (fluxcd/notification-controller#977 asks the same).
//
// Entries are per URL and per Authorization header (one user's answer is
// never served to another), at most MaxEntries, the least recently used
// dropped first; bodies over MaxBody are not remembered.
package etagcache

import (
	"bytes"
	"container/list"
	"crypto/sha256"
	"io"
	"net/http"
	"strconv"
	"sync"
)

// Limits of a Transport.
const (
	MaxEntries = 512
	MaxBody    = 1 << 20
)

// Transport is an http.RoundTripper adding conditional GETs to Base
// (http.DefaultTransport when nil). It is safe for concurrent use.
type Transport struct {
	Base http.RoundTripper

	mu      sync.Mutex
	entries map[[32]byte]*list.Element
	lru     list.List // of *entry, most recent first
	hits    int
}

type entry struct {
	key    [32]byte
	etag   string
	header http.Header
	body   []byte
}

// Hits counts the reads answered 304 and served from memory.
func (t *Transport) Hits() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.hits
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if req.Method != http.MethodGet || req.Header.Get("If-None-Match") != "" || req.Header.Get("Range") != "" {
		return base.RoundTrip(req)
	}
	key := sha256.Sum256([]byte(req.URL.String() + "\x00" + req.Header.Get("Authorization") + "\x00" + req.Header.Get("Accept")))
	t.mu.Lock()
	var cached *entry
	if el, ok := t.entries[key]; ok {
		cached = el.Value.(*entry)
		t.lru.MoveToFront(el)
	}
	t.mu.Unlock()
	if cached != nil {
		req = req.Clone(req.Context())
		req.Header.Set("If-None-Match", cached.etag)
	}
	resp, err := base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	switch {
	case resp.StatusCode == http.StatusNotModified && cached != nil:
		resp.Body.Close()
		h := cached.header.Clone()
		for k, v := range resp.Header { // fresh rate limit headers
			h[k] = v
		}
		t.mu.Lock()
		t.hits++
		t.mu.Unlock()
		return &http.Response{
			Status: "200 OK", StatusCode: http.StatusOK, Proto: resp.Proto, ProtoMajor: resp.ProtoMajor, ProtoMinor: resp.ProtoMinor,
			Header: h, Body: io.NopCloser(bytes.NewReader(cached.body)), ContentLength: int64(len(cached.body)),
			Request: resp.Request,
		}, nil
	case resp.StatusCode == http.StatusOK && resp.Header.Get("ETag") != "":
		orig := resp.Body
		body, err := io.ReadAll(io.LimitReader(orig, MaxBody+1))
		if err != nil {
			orig.Close()
			return nil, err
		}
		if len(body) > MaxBody {
			// Too large to remember: hand on what was read and the rest.
			resp.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(body), orig), orig}
			return resp, nil
		}
		orig.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		t.put(&entry{key: key, etag: resp.Header.Get("ETag"), header: resp.Header.Clone(), body: body})
	}
	return resp, nil
}

func (t *Transport) put(e *entry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.entries == nil {
		t.entries = map[[32]byte]*list.Element{}
	}
	if el, ok := t.entries[e.key]; ok {
		el.Value = e
		t.lru.MoveToFront(el)
		return
	}
	t.entries[e.key] = t.lru.PushFront(e)
	for t.lru.Len() > MaxEntries {
		last := t.lru.Back()
		delete(t.entries, last.Value.(*entry).key)
		t.lru.Remove(last)
	}
}
