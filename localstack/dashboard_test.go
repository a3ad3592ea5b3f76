package localstack_test

import (
	"context"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/kube-git-deploy/kube-git-deploy/localstack/demo"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write the dashboard screenshot of the README to docs/img/dashboard.png")

// TestDashboard drives the API service's dashboard (/ui/) in headless
// Chromium against the whole local stack: a pushed commit's job appears
// on the repository's page without a reload and reaches succeeded; a
// broken commit's job page shows its error; Rerun starts a new job and
// opens it, and it runs to succeeded live. Full-page screenshots are
// saved as artifacts ($KGD_ARTIFACTS_DIR, else the test's artifact
// directory: go test -artifacts keeps it).
func TestDashboard(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("install Debian's chromium (apt-get install chromium): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	st, d := startStack(t, ctx, t.Output())
	shots := os.Getenv("KGD_ARTIFACTS_DIR")
	if shots == "" {
		shots = t.ArtifactDir()
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots go to %s", shots)
	bctx := startChromium(t, ctx, chromium)
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatal(err)
	}
	base := strings.TrimSuffix(st.URLs.APIHTTP, "/")
	const owner, repo = demo.Owner, demo.Name

	push := func(t *testing.T, message string, edit func(map[string][]byte)) *demo.Pushed {
		t.Helper()
		files, err := demo.Files(ctx, st.URLs.Registry, owner, repo, message)
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			edit(files)
		}
		p, err := d.Push(ctx, owner, repo, "main", message, files)
		if err != nil {
			t.Fatal(err)
		}
		if p.JobID == "" {
			t.Fatalf("push %s: no job; deliveries %+v", p.After, p.Deliveries)
		}
		return p
	}
	// wait polls the page until the JavaScript condition holds (on every
	// DOM change; no timer), for at most five minutes: a job's build and
	// deploy take a while.
	wait := func(t *testing.T, what, cond string) {
		t.Helper()
		wctx, cancel := context.WithTimeout(bctx, 5*time.Minute)
		defer cancel()
		if err := chromedp.Do(wctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingTimeout(0), chromedp.WithPollingMutation())); err != nil {
			shot(t, bctx, shots, "failed-"+strings.ReplaceAll(t.Name(), "/", "-"))
			html, _ := chromedp.Run(bctx, chromedp.OuterHTML(chromedp.CSS("main")))
			t.Fatalf("waiting for %s (%s): %v\npage: %s", what, cond, err, html)
		}
	}
	navigate := func(t *testing.T, path string) {
		t.Helper()
		if err := chromedp.Do(bctx, chromedp.Navigate(base+path)); err != nil {
			t.Fatalf("open %s: %v", path, err)
		}
	}
	rowStatus := func(job string) string {
		return `document.querySelector('#job-rows tr[data-job=` + strconv.Quote(job) + `] .job-status .badge')?.dataset.status`
	}
	const jobStatus = `document.querySelector('#job-status .badge')?.dataset.status`

	var good, broken *demo.Pushed
	t.Run("new-jobs-appear", func(t *testing.T) {
		navigate(t, "/ui/repos/"+owner+"/"+repo)
		// A mark a reload would wipe out.
		if err := chromedp.Do(bctx, chromedp.Evaluate[chromedp.Void](`window.kgdNoReload = true`)); err != nil {
			t.Fatal(err)
		}
		wait(t, "the live stream", `document.getElementById('connection').textContent === 'Live'`)
		good = push(t, "dashboard: good", nil)
		wait(t, "the pushed job's row", rowStatus(good.JobID)+` !== undefined`)
		wait(t, "the job to succeed", rowStatus(good.JobID)+` === 'succeeded'`)
		shot(t, bctx, shots, "repository")
		broken = push(t, "dashboard: broken", func(files map[string][]byte) {
			files["kube-git-deploy.toml"] = []byte("[hello]\n[[docker]]\ndirectory = \"./app\n")
		})
		wait(t, "the broken job to fail", rowStatus(broken.JobID)+` === 'failed'`)
		wait(t, "the same page, never reloaded", `window.kgdNoReload === true`)
	})

	t.Run("failed-job-shows-error", func(t *testing.T) {
		if broken == nil {
			t.Fatal("the broken push failed")
		}
		// From the repository's page, as a user would.
		if _, err := chromedp.Run(bctx, chromedp.WaitEvent(page.LoadEventFired, nil,
			chromedp.Click(chromedp.CSS(`#job-rows tr[data-job=`+strconv.Quote(broken.JobID)+`] .job-link`)))); err != nil {
			t.Fatal(err)
		}
		wait(t, "the job's error", `!document.getElementById('job-error').hidden && `+
			`document.getElementById('job-error-text').textContent.includes('kube-git-deploy.toml:3')`)
		wait(t, "the failed badge", jobStatus+` === 'failed'`)
		shot(t, bctx, shots, "failed-job")
	})

	t.Run("rerun", func(t *testing.T) {
		if good == nil {
			t.Fatal("the good push failed")
		}
		navigate(t, "/ui/repos/"+owner+"/"+repo+"/jobs/"+good.JobID)
		wait(t, "the succeeded job's page", jobStatus+` === 'succeeded'`)
		if _, err := chromedp.Run(bctx, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.ID("rerun")))); err != nil {
			t.Fatal(err)
		}
		loc, err := chromedp.Run(bctx, chromedp.Location())
		if err != nil {
			t.Fatal(err)
		}
		prefix := base + "/ui/repos/" + owner + "/" + repo + "/jobs/"
		id, ok := strings.CutPrefix(loc, prefix)
		if !ok || id == "" || id == good.JobID {
			t.Fatalf("after Rerun the browser shows %s, want a new job's page under %s", loc, prefix)
		}
		wait(t, "the new job to run", jobStatus+` === 'running' || `+jobStatus+` === 'succeeded'`)
		wait(t, "the new job to succeed", jobStatus+` === 'succeeded' && `+
			`document.querySelector('.phase[data-phase="status-check"] .phase-status .badge').dataset.status === 'Succeeded'`)
		wait(t, "its log", `document.querySelectorAll('#log .line').length > 0`)
		wait(t, "its record read (finish time, rollback offered)", jobStatus+` === 'succeeded' && `+
			`document.querySelector('#job-finished time') !== null && !document.getElementById('rollback').hidden`)
		shot(t, bctx, shots, "rerun-job")
		if *updateScreenshot {
			shot(t, bctx, filepath.Join("..", "docs", "img"), "dashboard")
		}
	})
}

// startChromium starts headless Chromium for the test; the browser ends
// with ctx or the test. Uncaught exceptions of the pages fail the test.
func startChromium(t *testing.T, ctx context.Context, path string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path),
		chromedp.Flag("headless", "new"), chromedp.NoSandbox, chromedp.DisableGPU)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancel := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	var mu sync.Mutex
	var console []string
	done := make(chan struct{})
	messages := chromedp.Console(bctx)
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			mu.Lock()
			console = append(console, string(m.Type)+": "+m.String())
			mu.Unlock()
			if m.IsException() {
				t.Errorf("uncaught exception in the dashboard: %s", m)
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		<-done
		if t.Failed() {
			for _, m := range console {
				t.Logf("browser console %s", m)
			}
		}
	})
	return bctx
}

// shot saves a full-page PNG screenshot of the current page as
// dir/name.png.
func shot(t *testing.T, bctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}
