// Package registration registers kube-git-deploy's two HTTP functions,
// PrivateAPI and PublicAPI, with functions-framework-go. The Cloud
// Functions source bundle's root package imports it (see
// functions/cmd/bundle), and so does the local server.
//
// The functions framework's registry is a process-wide global; this file is
// the one place that touches it. The App behind both functions is built from
// the environment. When the functions framework serves a function
// (FUNCTION_TARGET set, as on Cloud Functions) it is built while the
// process starts, and a bad configuration ends the process there, with a
// message naming the variable: the instance never takes traffic, so a bad
// deploy fails instead of answering 500 to every request.
package registration

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"

	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/kube-git-deploy/kube-git-deploy/functions/app"
	"github.com/kube-git-deploy/kube-git-deploy/shared/logging"
)

// Names of the registered functions (their Cloud Functions entry points).
const (
	PrivateAPI = "PrivateAPI"
	PublicAPI  = "PublicAPI"
)

var (
	once   sync.Once
	theApp *app.App
	appErr error
)

func init() {
	functions.HTTP(PrivateAPI, serve(func(a *app.App) http.Handler { return a.Private }))
	functions.HTTP(PublicAPI, serve(func(a *app.App) http.Handler { return a.Public }))
	if os.Getenv("FUNCTION_TARGET") != "" {
		if _, err := Default(); err != nil {
			fmt.Fprintf(os.Stderr, "kube-git-deploy functions cannot start: %v\n", err)
			os.Exit(1)
		}
	}
}

// Default returns the App built from the process environment, building it
// on the first call.
func Default() (*app.App, error) {
	once.Do(func() {
		cfg, err := app.LoadConfig(os.Getenv)
		if err != nil {
			appErr = fmt.Errorf("configuration: %w", err)
			return
		}
		log := logging.New(os.Stderr, logging.Options{Project: cfg.Project})
		theApp, appErr = app.New(context.Background(), cfg, log)
	})
	return theApp, appErr
}

func serve(pick func(*app.App) http.Handler) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		a, err := Default()
		if err != nil {
			slog.Error("kube-git-deploy functions cannot start", "err", err.Error())
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintln(w, `{"ok":false,"error":"server misconfigured; see its logs"}`)
			return
		}
		pick(a).ServeHTTP(w, r)
	}
}
