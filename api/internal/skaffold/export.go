package skaffold

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kube-git-deploy/kube-git-deploy/shared/eventlog"
	"github.com/kube-git-deploy/kube-git-deploy/shared/store"
)

// ExportPath is the HTTP route of the event export (ExportHandler).
const ExportPath = "/kgd/v1/export"

// ExportHandler serves GET ExportPath: the stored events of one repository
// (?repository=OWNER/NAME or X-Kgd-Repository), or of one of its jobs
// (&job=ID), as NDJSON in one of eventlog's formats (&format=envelope, the
// default, skaffold or skaffold-v2), oldest first, from after a sequence
// number (&since=N) if given. It answers with what is stored when it is
// called and ends; /v1/events follows new events.
//
// Callers are identified and repositories checked as for the event
// streams: any identified caller may read a tracked repository's events.
// Errors are google.rpc.Status JSON with the matching HTTP status, as the
// gateway writes them.
func (svc *Service) ExportHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := svc.export(exportContext(r), w, r); err != nil {
			writeStatus(w, err)
		}
	})
}

// exportContext carries the request's identity token and scope as the
// gateway would pass them to a gRPC call.
func exportContext(r *http.Request) context.Context {
	md := metadata.MD{}
	for k, vs := range r.Header {
		if key, ok := incomingHeader(k); ok && (key == ScopeKey || key == ServerlessAuthorizationKey) {
			md.Append(key, vs...)
		}
	}
	if vs := r.Header.Values("Authorization"); len(vs) > 0 {
		md.Append(AuthorizationKey, vs...)
	}
	if vs, ok := r.URL.Query()[ScopeQuery]; ok {
		md.Append(ScopeKey, vs...)
	}
	return metadata.NewIncomingContext(r.Context(), md)
}

func (svc *Service) export(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if _, err := svc.identify(ctx); err != nil {
		return err
	}
	sc, err := scopeOf(ctx)
	if err != nil {
		return err
	}
	if sc.all() {
		return status.Errorf(codes.InvalidArgument, "export: name a repository (?%s=owner/name)", ScopeQuery)
	}
	q := r.URL.Query()
	format, err := eventlog.ParseFormat(q.Get("format"))
	if err != nil {
		return status.Error(codes.InvalidArgument, "export: "+err.Error())
	}
	var since int64
	if v := q.Get(SinceQuery); v != "" {
		if since, err = strconv.ParseInt(v, 10, 64); err != nil || since < 0 {
			return status.Errorf(codes.InvalidArgument, "export: since %q is not a sequence number", v)
		}
	}
	if _, err := svc.repos(ctx, sc); err != nil {
		return err
	}
	jobID := q.Get("job")
	var batches []store.EventBatch
	if jobID != "" {
		j, err := svc.store.Job(ctx, jobID)
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) || (err == nil && store.RepoKey(j.Owner, j.Name) != store.RepoKey(sc.owner, sc.name)) {
			return status.Errorf(codes.NotFound, "export: %s has no job %q", sc, jobID)
		}
		if err != nil {
			return grpcError(err, "read job")
		}
		if batches, err = svc.store.JobBatches(ctx, jobID); err != nil {
			return grpcError(err, "read the job's events")
		}
	}

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 64<<10)
	out := eventlog.NewWriter(bw, format)
	write := func(b store.EventBatch) error {
		if since > 0 {
			b = b.After(since)
		}
		return out.WriteBatch(b)
	}
	if jobID != "" {
		for _, b := range batches {
			if err := write(b); err != nil {
				return svc.exportFailed(ctx, sc, err)
			}
		}
	} else if err := svc.store.ReadEvents(ctx, sc.key(), store.From{AfterSeq: since}, write); err != nil {
		return svc.exportFailed(ctx, sc, err)
	}
	if err := bw.Flush(); err != nil {
		return svc.exportFailed(ctx, sc, err)
	}
	return nil
}

// exportFailed logs an export that failed after its status line went out:
// the client sees a truncated body (no final newline, or a short one).
func (svc *Service) exportFailed(ctx context.Context, sc scope, err error) error {
	svc.log.WarnContext(ctx, "export ended early", "scope", sc.String(), "err", err.Error())
	return nil
}

// writeStatus writes err as the gateway writes a gRPC error.
func writeStatus(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	writeJSON(w, runtime.HTTPStatusFromCode(st.Code()), map[string]any{"code": int(st.Code()), "message": st.Message(), "details": []any{}})
}
