// Command openapi-scope adds kube-git-deploy's request parameters to the
// OpenAPI (Swagger 2.0) files that protoc-gen-openapiv2 writes: every
// operation gets the query parameter "repository" and the header
// "X-Kgd-Repository" (both "owner/name"), which the gateway turns into the
// gRPC metadata x-kgd-repository; the event streams also get "since" and
// "sequence" (query parameters and X-Kgd-Since / X-Kgd-Sequence headers,
// the metadata x-kgd-since and x-kgd-sequence). The protos cannot declare
// them without changing the Skaffold request messages. proto/generate.sh
// runs it.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
)

const scopeDoc = "Scope the call to one tracked repository, owner/name. Without it the call covers all repositories (Handle needs a scope)."

const (
	sinceDoc    = "Resume after this sequence number of the scoped repository: the stream replays exactly the events numbered higher, then follows live ones. Needs a repository scope. Without it the stream replays a recent window (the repository's last iterations; with all repositories in scope, the last hour)."
	sequenceDoc = "true: every event carries its sequence number in kgd_sequence (a field of kube-git-deploy's, absent unless asked for)."
)

// streams are the event stream routes, which take since and sequence.
var streams = map[string]bool{"/v1/events": true, "/v1/event_log": true, "/v2/events": true}

func main() {
	for _, path := range os.Args[1:] {
		if err := rewrite(path); err != nil {
			fmt.Fprintf(os.Stderr, "openapi-scope: %s: %v\n", path, err)
			os.Exit(1)
		}
	}
}

func rewrite(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return err
	}
	paths, ok := doc["paths"].(map[string]any)
	if !ok {
		return fmt.Errorf("no paths")
	}
	scope := []any{
		map[string]any{"name": "repository", "in": "query", "required": false, "type": "string", "description": scopeDoc},
		map[string]any{"name": "X-Kgd-Repository", "in": "header", "required": false, "type": "string", "description": scopeDoc + " Same as the repository query parameter; gRPC clients send the metadata x-kgd-repository."},
	}
	stream := []any{
		map[string]any{"name": "since", "in": "query", "required": false, "type": "string", "format": "int64", "description": sinceDoc},
		map[string]any{"name": "X-Kgd-Since", "in": "header", "required": false, "type": "string", "format": "int64", "description": sinceDoc + " Same as the since query parameter; gRPC clients send the metadata x-kgd-since."},
		map[string]any{"name": "sequence", "in": "query", "required": false, "type": "boolean", "description": sequenceDoc},
		map[string]any{"name": "X-Kgd-Sequence", "in": "header", "required": false, "type": "boolean", "description": sequenceDoc + " Same as the sequence query parameter; gRPC clients send the metadata x-kgd-sequence."},
	}
	for p, item := range paths {
		methods, ok := item.(map[string]any)
		if !ok {
			return fmt.Errorf("path %s is not an object", p)
		}
		for m, op := range methods {
			o, ok := op.(map[string]any)
			if !ok {
				return fmt.Errorf("%s %s is not an object", m, p)
			}
			params, _ := o["parameters"].([]any)
			params = append(params, scope...)
			if streams[p] {
				params = append(params, stream...)
			}
			o["parameters"] = params
		}
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return os.WriteFile(path, out.Bytes(), 0o644)
}
