package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/grpc/codes"
)

// Exit codes of kgd. Every error a Client returns maps to one of them
// (ExitCode); the command line adds the usage and job-outcome ones.
const (
	// ExitOK: the command did what it was asked.
	ExitOK = 0
	// ExitFailed: the job the command showed or followed failed or was
	// canceled.
	ExitFailed = 1
	// ExitUsage: bad arguments or flags, or a request the server refused
	// as invalid (400, 409, 412, 415).
	ExitUsage = 2
	// ExitNotFound: the repository, job or route does not exist (404,
	// NOT_FOUND).
	ExitNotFound = 3
	// ExitDenied: the caller is not signed in or may not do this (401,
	// 403, UNAUTHENTICATED, PERMISSION_DENIED).
	ExitDenied = 4
	// ExitServer: the server failed or could not be reached.
	ExitServer = 5
	// ExitInterrupted: the command was interrupted (Ctrl-C), as a shell
	// reports a process ended by SIGINT.
	ExitInterrupted = 130
)

// Error is an error answer of the API service or PrivateAPI, or a failure
// to reach one, with its canonical code.
type Error struct {
	// Code is the google.rpc.Status code of the answer, or the code its
	// HTTP status maps to; Unavailable when the server was not reached.
	Code codes.Code
	// HTTPStatus is the answer's HTTP status; 0 if there was none (a
	// network error, or an error frame of a stream).
	HTTPStatus int
	// Message is the server's message (google.rpc.Status message, or
	// PrivateAPI's "error"), or what went wrong on the way.
	Message string
	// Hint says what the user can do about it; may be empty.
	Hint string
	// Err is the underlying error of a failure to reach the server.
	Err error
}

func (e *Error) Error() string {
	if e.Hint != "" {
		return e.Message + " (" + e.Hint + ")"
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// ExitCode returns kgd's exit code for err: ExitOK for nil, the code's
// class for an *Error, ExitInterrupted for a canceled context and
// ExitServer for anything else.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var e *Error
	if errors.As(err, &e) {
		return exitCodeOf(e.Code)
	}
	if errors.Is(err, context.Canceled) {
		return ExitInterrupted
	}
	return ExitServer
}

func exitCodeOf(c codes.Code) int {
	switch c {
	case codes.OK:
		return ExitOK
	case codes.NotFound:
		return ExitNotFound
	case codes.PermissionDenied, codes.Unauthenticated:
		return ExitDenied
	case codes.InvalidArgument, codes.FailedPrecondition, codes.AlreadyExists, codes.OutOfRange:
		return ExitUsage
	default:
		return ExitServer
	}
}

// codeOfHTTP maps an HTTP status to the canonical code grpc-gateway maps
// to it, for answers without a google.rpc.Status body.
func codeOfHTTP(status int) codes.Code {
	switch {
	case status == http.StatusBadRequest, status == http.StatusRequestEntityTooLarge, status == http.StatusUnsupportedMediaType,
		status == http.StatusUnprocessableEntity:
		return codes.InvalidArgument
	case status == http.StatusUnauthorized:
		return codes.Unauthenticated
	case status == http.StatusForbidden, status == http.StatusMisdirectedRequest:
		return codes.PermissionDenied
	case status == http.StatusNotFound:
		return codes.NotFound
	case status == http.StatusConflict:
		return codes.AlreadyExists
	case status == http.StatusPreconditionFailed:
		return codes.FailedPrecondition
	case status == http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case status == http.StatusNotImplemented:
		return codes.Unimplemented
	case status == http.StatusServiceUnavailable, status == http.StatusBadGateway, status == http.StatusGatewayTimeout:
		return codes.Unavailable
	case status >= 500:
		return codes.Internal
	case status >= 400:
		return codes.InvalidArgument
	}
	return codes.Unknown
}

// service names which server answered, for hints.
type service int

const (
	serviceAPI service = iota
	servicePrivate
)

// errorOf builds the Error of a non-2xx answer from its body: a
// google.rpc.Status ({"code","message"}) from the API service, or
// {"ok":false,"error"} from PrivateAPI; anything else is quoted briefly.
func errorOf(svc service, status int, body []byte) *Error {
	e := &Error{HTTPStatus: status, Code: codeOfHTTP(status)}
	var st struct {
		Code    *int   `json:"code"`
		Message string `json:"message"`
		Error   any    `json:"error"`
	}
	if json.Unmarshal(body, &st) == nil {
		switch msg := st.Error.(type) {
		case string:
			e.Message = msg
		case map[string]any: // a stream's error frame shape, should a unary answer carry one
			e.Message, _ = msg["message"].(string)
		}
		if st.Message != "" {
			e.Message = st.Message
		}
		if st.Code != nil && *st.Code > 0 && *st.Code <= int(codes.Unauthenticated) {
			e.Code = codes.Code(*st.Code)
		}
	}
	if e.Message == "" {
		text := strings.TrimSpace(string(body))
		if len(text) > 200 {
			text = text[:200] + "…"
		}
		e.Message = fmt.Sprintf("%d %s", status, http.StatusText(status))
		if text != "" {
			e.Message += ": " + text
		}
	}
	e.Hint = hint(svc, e.Code)
	return e
}

// hint says what to do about a refusal.
func hint(svc service, c codes.Code) string {
	switch {
	case svc == servicePrivate && c == codes.Unauthenticated:
		return "run `kgd login` to sign in with GitHub; on Cloud Run also check your Google identity (`gcloud auth login` or KGD_ID_TOKEN)"
	case c == codes.Unauthenticated:
		return "the API needs a Google identity token: run `gcloud auth login`, or set KGD_ID_TOKEN, or GOOGLE_APPLICATION_CREDENTIALS to a service account key"
	case c == codes.PermissionDenied:
		return "ask an operator of the repository to add you to its deploy policy's operators (`kgd policy OWNER/NAME --operator EMAIL`), or to KGD_OPERATORS"
	}
	return ""
}
