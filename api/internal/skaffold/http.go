package skaffold

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	jobspb "github.com/kube-git-deploy/kube-git-deploy/proto/jobs/v1"
	v1pb "github.com/kube-git-deploy/kube-git-deploy/proto/v1"
	v2pb "github.com/kube-git-deploy/kube-git-deploy/proto/v2"
	"github.com/kube-git-deploy/kube-git-deploy/shared/loopback"
)

// HTTPOptions tune the HTTP side.
type HTTPOptions struct {
	// Ready reports whether the service can serve (its store answers);
	// /readyz calls it. nil means always ready.
	Ready func(context.Context) error
	// StreamWriteTimeout ends an HTTP event stream whose client does not
	// take a message within it (a stalled reader); 0 means 30 seconds.
	StreamWriteTimeout time.Duration
	// Export, when set, serves ExportPath (Service.ExportHandler).
	Export http.Handler
	// Dashboard, when set, serves the web dashboard under /ui/ (and / and
	// /ui redirect to it).
	Dashboard http.Handler
	// Guard, when set, guards every route against web pages (local mode:
	// the gateway listens on loopback); its refusals are written as
	// google.rpc.Status JSON unless it has its own Reject.
	Guard *loopback.Guard
}

// Marshaler is the gateway's JSON marshaler, set as Skaffold sets it:
// proto field names, every field emitted, unknown request fields ignored.
func Marshaler() runtime.Marshaler {
	return &runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
	}}
}

// NewHTTPHandler returns the HTTP gateway of both API versions, calling
// the gRPC server through conn, plus GET /healthz (liveness) and GET
// /readyz (readiness). The scope of a call comes from ?repository= or the
// X-Kgd-Repository header, a stream's resume position from ?since= or
// X-Kgd-Since, its sequence numbers from ?sequence= or X-Kgd-Sequence;
// the caller's identity token from the
// Authorization header (grpc-gateway forwards it as "authorization") or
// X-Serverless-Authorization. Grpc-Metadata-* headers cannot set either.
func NewHTTPHandler(ctx context.Context, conn *grpc.ClientConn, opts HTTPOptions) (http.Handler, error) {
	if opts.StreamWriteTimeout <= 0 {
		opts.StreamWriteTimeout = 30 * time.Second
	}
	gw := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, Marshaler()),
		runtime.WithIncomingHeaderMatcher(incomingHeader),
		// A stream's status line and headers go out before its first
		// message (grpc-gateway would hold them until then).
		runtime.WithForwardResponseOption(func(ctx context.Context, w http.ResponseWriter, m proto.Message) error {
			if md, ok := runtime.ServerMetadataFromContext(ctx); m == nil && ok && len(md.HeaderMD.Get(streamHeader)) > 0 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusOK)
				_ = http.NewResponseController(w).Flush()
			}
			return nil
		}),
		runtime.WithMetadata(func(_ context.Context, r *http.Request) metadata.MD {
			md := metadata.MD{}
			q := r.URL.Query()
			for param, key := range map[string]string{ScopeQuery: ScopeKey, SinceQuery: SinceKey, SequenceQuery: SequenceKey} {
				if vs, ok := q[param]; ok {
					md[key] = vs
				}
			}
			return md
		}),
	)
	if err := v1pb.RegisterSkaffoldServiceHandler(ctx, gw, conn); err != nil {
		return nil, fmt.Errorf("register v1 gateway: %w", err)
	}
	if err := v2pb.RegisterSkaffoldV2ServiceHandler(ctx, gw, conn); err != nil {
		return nil, fmt.Errorf("register v2 gateway: %w", err)
	}
	if err := jobspb.RegisterJobsHandler(ctx, gw, conn); err != nil {
		return nil, fmt.Errorf("register job API gateway: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "server": "api"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if opts.Ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			defer cancel()
			if err := opts.Ready(ctx); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ok": false, "error": err.Error()})
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "server": "api"})
	})
	streams := stallGuard(gw, opts.StreamWriteTimeout)
	for _, p := range []string{"/v1/events", "/v1/event_log", "/v2/events", "/v2/applicationLogs", "GET /kgd/v1/repositories/{owner}/{name}/jobs/{job}/log"} {
		mux.Handle(p, streams)
	}
	if opts.Dashboard != nil {
		mux.Handle("/ui/", opts.Dashboard)
		mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
		mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	}
	if opts.Export != nil {
		mux.Handle("GET "+ExportPath, stallGuard(opts.Export, opts.StreamWriteTimeout))
	}
	mux.Handle("/", gw)
	if opts.Guard != nil {
		g := *opts.Guard
		if g.Reject == nil {
			g.Reject = rejectStatus
		}
		return g.Handler(mux), nil
	}
	return mux, nil
}

// incomingHeader maps HTTP headers to gRPC metadata: grpc-gateway's
// defaults (Grpc-Metadata-K as k; Authorization is forwarded as
// "authorization" by grpc-gateway itself), plus X-Kgd-Repository,
// X-Kgd-Since, X-Kgd-Sequence and X-Serverless-Authorization. A
// Grpc-Metadata-* header never sets an identity token: only the headers
// Cloud Run IAM checked may.
func incomingHeader(key string) (string, bool) {
	switch {
	case strings.EqualFold(key, ScopeKey):
		return ScopeKey, true
	case strings.EqualFold(key, SinceKey):
		return SinceKey, true
	case strings.EqualFold(key, SequenceKey):
		return SequenceKey, true
	case strings.EqualFold(key, ServerlessAuthorizationKey):
		return ServerlessAuthorizationKey, true
	}
	k, ok := runtime.DefaultHeaderMatcher(key)
	if ok && (strings.EqualFold(k, AuthorizationKey) || strings.EqualFold(k, ServerlessAuthorizationKey)) {
		return "", false
	}
	return k, ok
}

// rejectStatus writes a guard's refusal as the gateway writes errors:
// google.rpc.Status JSON.
func rejectStatus(w http.ResponseWriter, _ *http.Request, code int, msg string) {
	c := codes.PermissionDenied
	if code == loopback.StatusContentType {
		c = codes.InvalidArgument
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": int(c), "message": msg, "details": []any{}})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// stallGuard gives every write of a streaming response a deadline, so a
// client that stops reading is disconnected (which cancels its gRPC
// stream) instead of holding the stream open forever.
func stallGuard(next http.Handler, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: timeout}, r)
	})
}

type deadlineWriter struct {
	http.ResponseWriter
	rc          *http.ResponseController
	timeout     time.Duration
	wroteHeader bool
}

// WriteHeader passes the first status on and drops later ones: a stream
// answers 200 before its first message, and an error that ends it later
// can no longer change the status (it is written as an error frame).
func (d *deadlineWriter) WriteHeader(code int) {
	if !d.wroteHeader {
		d.wroteHeader = true
		d.ResponseWriter.WriteHeader(code)
	}
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.wroteHeader = true
	_ = d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.ResponseWriter.Write(p)
}

func (d *deadlineWriter) Flush() {
	_ = d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
	_ = d.rc.Flush()
}

// Unwrap lets http.ResponseController reach the real writer.
func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// Mixed serves gRPC (HTTP/2 with a gRPC content type) with grpcH and
// everything else with httpH, for one port carrying both, as on Cloud Run.
// The server must accept unencrypted HTTP/2 (http.Protocols).
func Mixed(grpcH, httpH http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			grpcH.ServeHTTP(w, r)
			return
		}
		httpH.ServeHTTP(w, r)
	})
}
