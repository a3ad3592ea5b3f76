// Package pipeline runs one job: check the repository out at the pushed
// commit, render kube-git-deploy.toml, build and push each unit's image,
// deploy each unit's chart and wait for its workloads to roll out, and
// records every step as the Skaffold event sequence of one dev-loop
// iteration (v1 and v2), with build and deploy output as v2 log events.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"helm.sh/helm/v4/pkg/chart"

	enumspb "github.com/kube-git-deploy/kube-git-deploy/proto/enums"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/build"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/deploy"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/rollout"
	"github.com/kube-git-deploy/kube-git-deploy/runner/internal/workspace"
	"github.com/kube-git-deploy/kube-git-deploy/shared/event"
	"github.com/kube-git-deploy/kube-git-deploy/shared/repoconfig"
)

// Source checks repositories out.
type Source interface {
	Checkout(ctx context.Context, dir, owner, name, sha, token string) error
	ChangedFiles(ctx context.Context, dir, owner, name, before, sha, token string) ([]string, error)
}

// Builder builds and pushes images.
type Builder interface {
	Build(ctx context.Context, req build.Request, out func(line string)) (build.Result, error)
}

// Deployer installs or upgrades Helm releases.
type Deployer interface {
	Deploy(ctx context.Context, req deploy.Request, out func(line string)) (deploy.Result, error)
}

// Checker waits for deployed workloads to roll out.
type Checker interface {
	Wait(ctx context.Context, resources []deploy.Resource, deadline time.Duration, report func(rollout.Update)) error
}

// Config configures a Pipeline.
type Config struct {
	// WorkDir holds the jobs' workspaces; empty means the system temp dir.
	WorkDir string
	// StatusCheckDeadline bounds the rollout check; 0 means 10 minutes.
	StatusCheckDeadline time.Duration
	// LockRelease takes a lock that keeps other runners from running Helm
	// on the release (key "namespace/release") for at most hold; nil means
	// only this process's own serialization applies.
	LockRelease func(ctx context.Context, key string, hold time.Duration) (unlock func(), err error)
	// RegistryAuth returns the credentials for pushing to a registry host;
	// nil pushes anonymously.
	RegistryAuth func(ctx context.Context, host string) (user, password string, err error)
	// BuildMemory (bytes), BuildCPUs and BuildTimeout bound each image
	// build (build.Request); zero means no memory or CPU limit and the
	// build package's default timeout.
	BuildMemory  int64
	BuildCPUs    float64
	BuildTimeout time.Duration
	// Prune, when set, removes old local images of an image repository
	// from the Docker Engine after a job built it (build.Prune); it never
	// runs while a build of this pipeline runs.
	Prune func(ctx context.Context, repository string) error
}

// Pipeline runs jobs. It is safe for concurrent use.
type Pipeline struct {
	cfg Config
	// engine is held shared by builds and alone by Prune: removing images
	// while the legacy builder looks up its cache fails that build.
	engine sync.RWMutex
	// pruning counts the prunes running after their job (Wait); pruned
	// holds when each image repository was last pruned (guarded by mu).
	pruning  sync.WaitGroup
	mu       sync.Mutex
	pruned   map[string]time.Time
	src      Source
	builder  Builder
	deployer Deployer
	checker  Checker
	now      func() time.Time
}

// New returns a Pipeline; now may be nil.
func New(cfg Config, src Source, b Builder, d Deployer, c Checker, now func() time.Time) (*Pipeline, error) {
	if src == nil || b == nil || d == nil || c == nil {
		return nil, errors.New("pipeline: source, builder, deployer and checker are required")
	}
	if cfg.StatusCheckDeadline == 0 {
		cfg.StatusCheckDeadline = 10 * time.Minute
	}
	if now == nil {
		now = time.Now
	}
	return &Pipeline{cfg: cfg, src: src, builder: b, deployer: d, checker: c, now: now}, nil
}

// Job is what the pipeline needs to know about one job.
type Job struct {
	event.Job
	Owner, Name string
	Before      string
	Token       string // GitHub token for private repositories; may be empty
	// Triggers are the repository's switches, shown in the state
	// (autoTrigger). With Triggers.Deploy off the iteration ends after the
	// build with the deploy pending, unless ForceDeploy is set.
	Triggers event.Triggers
	// ForceDeploy deploys what the job builds although Triggers.Deploy is
	// off: an Execute request asked for build and deploy.
	ForceDeploy bool
	// Deployed maps each unit to the commit it was last successfully
	// deployed (or, without a chart, built) at: a unit's paths filter
	// compares the pushed commit with that one, not with the push's
	// before, so a change left behind by a superseded, failed or collapsed
	// push is still deployed. A unit without an entry compares with Before.
	Deployed map[string]string
	// Policy is the repository's deploy policy: every release is checked
	// against it, and a unit that names no namespace deploys to its first
	// namespace. It must name at least one namespace.
	Policy deploy.Policy
	// Images, when non-nil, makes the job deploy-only: nothing is built
	// and each unit's chart gets the image recorded here (unit name →
	// "tag@digest", the Outcome.Images of the job that built it), whatever
	// Triggers.Deploy says. A unit with a docker action and no entry fails
	// the job with DEPLOY_NO_MATCHING_BUILD.
	Images map[string]string
	// RecordPending, if set, records the images of a build whose deploy
	// waits (auto-deploy off). It runs before the iteration's final
	// event, so a client that sees the build succeed can deploy it at
	// once; if it fails, the job fails.
	RecordPending func(ctx context.Context, images map[string]string) error
	// Interrupted, if set, reports whether the runner is shutting down:
	// a job that fails then (its steps cancelled) records no end of its
	// iteration and reports Outcome.Interrupted, for the runner to hand it
	// back; the runner that runs it again ends the iteration. Without
	// this, a Skaffold client saw the iteration fail and then succeed
	// (found by localstack/faults).
	Interrupted func() bool
	// Everything, for a job a person asked for (a rerun, a deploy of a
	// chosen commit, a rollback), skips the units' paths filters: every
	// unit of the branch is built and deployed, not only the changed ones.
	Everything bool
	// Units, when set, limits the job to these units (a rollback of some
	// units); a name the commit's configuration lacks fails the job.
	Units []string
	// Deploying, if set, is told when a unit's deploy starts and in which
	// namespace (the worker reports a GitHub Deployment). It must not
	// block.
	Deploying func(unit, namespace string)
}

// Outcome is how a job ended. Err is nil on success.
type Outcome struct {
	Err *event.ErrorInfo
	// Artifacts maps each built image (without tag) to the pushed
	// "tag@digest" reference; for a deploy-only job, each deployed one.
	Artifacts map[string]string
	// Images maps each unit name to the same "tag@digest" reference: what
	// a later deploy-only job deploys (Job.Images).
	Images map[string]string
	// DeployPending reports that the images were built but not deployed
	// because the repository's automatic deploys are off.
	DeployPending bool
	// Deployed reports that Helm releases were deployed (and checked).
	Deployed bool
	// Units are the units the job built and deployed (the ones its
	// filters kept): on success, each of them is now at the job's commit.
	Units []string
	// Interrupted reports that the job failed while Job.Interrupted held:
	// its iteration's end was not recorded.
	Interrupted bool
}

// Run runs j, sending its events to sink. It returns the outcome; the
// error is non-nil only when the events could not be recorded.
func (p *Pipeline) Run(ctx context.Context, j Job, sink Sink) (Outcome, error) {
	ws, err := os.MkdirTemp(p.cfg.WorkDir, "kgd-job-")
	if err != nil {
		return Outcome{}, fmt.Errorf("workspace: %w", err)
	}
	defer os.RemoveAll(ws)
	repoDir := filepath.Join(ws, "repo")

	// Check out and render before the first event, so the MetaEvent can
	// describe the artifacts and releases of this iteration.
	cfg, tree, prepErr := p.prepare(ctx, j, repoDir)
	if tree != nil {
		defer tree.Close()
	}
	plan := event.Plan{}
	if cfg != nil {
		plan = planOf(cfg.Units)
	}
	e := newEmitter(event.NewFactory(j.Job, plan, p.now), sink, j.Triggers)
	f := e.f
	out := Outcome{Artifacts: map[string]string{}, Images: map[string]string{}}
	images := map[string]build.Result{}
	if j.Images == nil {
		defer p.pruneLater(images)
	}
	deployOnly := j.Images != nil
	var noBuild *event.ErrorInfo
	if deployOnly && prepErr == nil {
		// Before the first event, so every state shows the images as
		// built, as Skaffold's state does after the build.
		noBuild = recordedImages(cfg.Units, j.Images, images, &out, e)
	}
	e.emit(f.V1Meta(), f.V2Meta())
	e.emit(f.V1DevLoop(event.InProgress, nil), f.V2Task(event.TaskDevLoop, event.V2InProgress, nil))
	fail := func(info *event.ErrorInfo) (Outcome, error) {
		out.Err = info
		if j.Interrupted != nil && j.Interrupted() {
			out.Interrupted = true
			return out, e.err
		}
		e.emit(f.V1DevLoop(event.Failed, info), f.V2Task(event.TaskDevLoop, event.V2Failed, info))
		return out, e.err
	}
	if prepErr != nil {
		e.log(event.TaskDevLoop, event.SubtaskNone, prepErr.Message)
		return fail(prepErr)
	}

	if deployOnly {
		// An Execute deploy intent: the images were built by an earlier
		// job; no build events, and the deploy runs whatever the triggers.
		if noBuild != nil {
			e.emit(f.V1Deploy(event.InProgress, nil), f.V2Task(event.TaskDeploy, event.V2InProgress, nil), f.V2Deploy(event.V2InProgress, nil))
			e.emit(f.V1Deploy(event.Failed, noBuild), f.V2Deploy(event.V2Failed, noBuild), f.V2Task(event.TaskDeploy, event.V2Failed, noBuild))
			return fail(noBuild)
		}
		for _, u := range cfg.Units {
			if ref, ok := out.Images[u.Name]; ok {
				e.log(event.TaskDeploy, event.SubtaskNone, "Deploying "+ref+" of unit "+u.Name+", built by an earlier job")
			}
		}
	} else if info := p.build(ctx, cfg.Units, tree, e, images, &out, p.cacheSources(ctx, j, tree, cfg.Units)); info != nil {
		return fail(info)
	}
	out.Units = unitNames(cfg.Units)
	if plan.Releases == 0 {
		e.emit(f.V1DevLoop(event.Succeeded, nil), f.V2Task(event.TaskDevLoop, event.V2Succeeded, nil))
		return out, e.err
	}
	if !deployOnly && !j.Triggers.Deploy && !j.ForceDeploy {
		// Automatic deploys are off (the control API's AutoDeploy): the
		// iteration ends after the build, as Skaffold's does, and the
		// deploy waits for an Execute deploy intent.
		out.DeployPending = true
		if j.RecordPending != nil {
			if err := j.RecordPending(ctx, out.Images); err != nil {
				return fail(&event.ErrorInfo{Code: enumspb.StatusCode_DEPLOY_CANCELLED, Message: "could not record the pending deploy: " + err.Error()})
			}
		}
		e.log(event.TaskDevLoop, event.SubtaskNone, "Auto-deploy is off: built images wait for an Execute deploy intent")
		e.emit(f.V1DevLoop(event.Succeeded, nil), f.V2Task(event.TaskDevLoop, event.V2Succeeded, nil))
		return out, e.err
	}

	// Helm renders and applies in one step; Render opens and closes at
	// once, as Skaffold's Helm deployer reports it.
	e.emit(nil, f.V2Task(event.TaskRender, event.V2InProgress, nil), f.V2Render(event.V2InProgress, nil),
		f.V2Render(event.V2Succeeded, nil), f.V2Task(event.TaskRender, event.V2Succeeded, nil))
	e.emit(f.V1Deploy(event.InProgress, nil), f.V2Task(event.TaskDeploy, event.V2InProgress, nil), f.V2Deploy(event.V2InProgress, nil))
	var resources []deploy.Resource
	for _, u := range cfg.Units {
		if u.Helm == nil {
			continue
		}
		namespace := u.Helm.Namespace
		if namespace == "" && len(j.Policy.Namespaces) > 0 {
			namespace = j.Policy.Namespaces[0] // the repository's own
		}
		chrt, values, err := loadChart(ctx, tree, u.Helm)
		if err != nil {
			info := &event.ErrorInfo{Code: enumspb.StatusCode_DEPLOY_HELM_USER_ERR, Message: "unit " + u.Name + ": " + err.Error()}
			e.emit(f.V1Deploy(event.Failed, info), f.V2Deploy(event.V2Failed, info), f.V2Task(event.TaskDeploy, event.V2Failed, info))
			return fail(info)
		}
		if j.Deploying != nil {
			j.Deploying(u.Name, namespace)
		}
		req := deploy.Request{
			Release: u.Helm.Release, Namespace: namespace,
			Owner: j.Owner + "/" + j.Name, Policy: j.Policy,
			Chart: chrt, Values: values,
			Set: imageValues(u, images),
			// The pipeline checks the rollout itself (with events), so Helm
			// never waits; a unit's wait decides whether that check runs.
			Wait: false, Timeout: u.Helm.Timeout, Atomic: u.Helm.Atomic,
		}
		unlock := func() {}
		if p.cfg.LockRelease != nil {
			key := req.Namespace + "/" + req.Release
			e.log(event.TaskDeploy, event.SubtaskNone, "Waiting for the release lock of "+key)
			if unlock, err = p.cfg.LockRelease(ctx, key, req.Timeout+time.Minute); err != nil {
				info := &event.ErrorInfo{Code: enumspb.StatusCode_DEPLOY_CANCELLED, Message: "could not lock release " + key + ": " + err.Error()}
				e.emit(f.V1Deploy(event.Failed, info), f.V2Deploy(event.V2Failed, info), f.V2Task(event.TaskDeploy, event.V2Failed, info))
				return fail(info)
			}
		}
		res, err := p.deployer.Deploy(ctx, req, func(line string) { e.log(event.TaskDeploy, event.SubtaskNone, line) })
		unlock()
		if err != nil {
			info := deployError(err)
			e.emit(f.V1Deploy(event.Failed, info), f.V2Deploy(event.V2Failed, info), f.V2Task(event.TaskDeploy, event.V2Failed, info))
			return fail(info)
		}
		for _, r := range res.Resources {
			e.log(event.TaskDeploy, event.SubtaskNone, fmt.Sprintf("Release %s revision %d applied %s", res.Release, res.Revision, r))
		}
		if u.Helm.Wait {
			// wait = false in the file: deploy without checking the rollout.
			resources = append(resources, res.Resources...)
		}
	}
	e.emit(nil, f.V2Deploy(event.V2Succeeded, nil))

	// Status check, nested in the deploy as with Skaffold's Helm deployer.
	e.emit(f.V1StatusCheck(event.Started, nil), f.V2Task(event.TaskStatusCheck, event.V2InProgress, nil))
	err = p.checker.Wait(ctx, resources, p.cfg.StatusCheckDeadline, func(u rollout.Update) {
		v2status := map[string]string{"InProgress": event.V2InProgress, "Succeeded": event.V2Succeeded, "Failed": event.V2Failed}[u.Status]
		v1status := map[string]string{"InProgress": event.InProgress, "Succeeded": event.Succeeded, "Failed": event.Failed}[u.Status]
		e.emit(f.V1ResourceStatus(u.Resource, v1status, u.Message, u.Code, nil),
			f.V2ResourceStatus(u.Resource, v2status, u.Message, u.Code, nil))
	})
	if err != nil {
		info := rolloutError(err)
		e.emit(f.V1StatusCheck(event.Failed, info), f.V2Task(event.TaskStatusCheck, event.V2Failed, info))
		e.emit(f.V1Deploy(event.Failed, info), f.V2Task(event.TaskDeploy, event.V2Failed, info))
		return fail(info)
	}
	e.emit(f.V1StatusCheck(event.Succeeded, nil), f.V2Task(event.TaskStatusCheck, event.V2Succeeded, nil))
	e.emit(f.V1Deploy(event.Complete, nil), f.V2Task(event.TaskDeploy, event.V2Succeeded, nil))
	out.Deployed = true
	e.emit(f.V1DevLoop(event.Succeeded, nil), f.V2Task(event.TaskDevLoop, event.V2Succeeded, nil))
	return out, e.err
}

// build builds and pushes the units' images in file order, recording each
// in images and out; it returns the failure of the first that fails.
// cacheFrom holds each unit's build cache sources (see cacheSources).
func (p *Pipeline) build(ctx context.Context, units []repoconfig.Unit, tree *workspace.Tree, e *emitter, images map[string]build.Result, out *Outcome, cacheFrom map[string][]string) *event.ErrorInfo {
	f := e.f
	if len(f.Plan().Artifacts) > 0 {
		e.emit(nil, f.V2Task(event.TaskBuild, event.V2InProgress, nil))
	}
	for _, u := range units {
		if u.Docker == nil {
			continue
		}
		name := imageName(u.Docker.Tag)
		e.emit(f.V1Build(name, event.InProgress, nil), f.V2Build(name, event.StepBuild, event.V2InProgress, nil))
		var res build.Result
		contextRoot, err := tree.Sub(u.Docker.Directory)
		if err != nil {
			err = &build.Error{Code: enumspb.StatusCode_BUILD_USER_ERROR, Msg: "build context", Err: err}
		} else {
			p.engine.RLock()
			res, err = p.builder.Build(ctx, build.Request{
				Context:    contextRoot,
				Dockerfile: u.Docker.Dockerfile, Tag: u.Docker.Tag, Args: u.Docker.Args,
				Target: u.Docker.Target, CacheFrom: cacheFrom[u.Name], Push: u.Docker.Push, Auth: p.cfg.RegistryAuth,
				Memory: p.cfg.BuildMemory, CPUs: p.cfg.BuildCPUs, Timeout: p.cfg.BuildTimeout,
			}, func(line string) { e.log(event.TaskBuild, name, line) })
			p.engine.RUnlock()
			contextRoot.Close()
		}
		if err != nil {
			info := buildError(err)
			e.emit(f.V1Build(name, event.Failed, info), f.V2Build(name, event.StepBuild, event.V2Failed, info),
				f.V2Task(event.TaskBuild, event.V2Failed, info))
			return info
		}
		ref := res.Tag
		if res.Digest != "" {
			ref += "@" + res.Digest
		}
		images[u.Name] = res
		out.Artifacts[name] = ref
		out.Images[u.Name] = ref
		e.setArtifact(name, ref)
		e.log(event.TaskBuild, name, "Built "+ref)
		e.emit(f.V1Built(name, ref), f.V2Build(name, event.StepBuild, event.V2Succeeded, nil))
	}
	if len(f.Plan().Artifacts) > 0 {
		e.emit(nil, f.V2Task(event.TaskBuild, event.V2Succeeded, nil))
	}
	return nil
}

// pruneEvery is the shortest time between two prunes of one image
// repository: a prune lists every image of the engine, which took up to a
// second on an engine holding hundreds, and a push every few seconds only
// adds an image each.
const pruneEvery = time.Minute

// pruneLater removes old local images of the repositories a job built,
// after the job: Run returns at once, so the runner takes its next job
// while the engine deletes. Each image repository is pruned at most once
// per pruneEvery, and only when no build or other prune holds the engine
// (a later job prunes then); a build that starts meanwhile waits for it.
// Failures are only logged by Prune's implementation: they never change a
// job's outcome. Wait waits for the prunes still running.
func (p *Pipeline) pruneLater(built map[string]build.Result) {
	if p.cfg.Prune == nil || len(built) == 0 {
		return
	}
	now := p.now()
	var refs []string
	p.mu.Lock()
	for _, res := range built {
		ref := imageName(res.Tag)
		if last, ok := p.pruned[ref]; (!ok || now.Sub(last) >= pruneEvery) && !slices.Contains(refs, ref) {
			refs = append(refs, ref)
		}
	}
	p.mu.Unlock()
	if len(refs) == 0 || !p.engine.TryLock() {
		return
	}
	p.mu.Lock()
	if p.pruned == nil {
		p.pruned = map[string]time.Time{}
	}
	for _, ref := range refs {
		p.pruned[ref] = now
	}
	p.mu.Unlock()
	p.pruning.Go(func() {
		defer p.engine.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, ref := range refs {
			_ = p.cfg.Prune(ctx, ref)
		}
	})
}

// Wait waits until the image prunes started after jobs (Config.Prune)
// have ended; the runner calls it before it closes its Docker client.
func (p *Pipeline) Wait() { p.pruning.Wait() }

// maxValuesFile bounds one Helm values file of a repository.
const maxValuesFile = 4 << 20

// loadChart reads a unit's chart and values files from the checkout,
// through the workspace's safe reads (no symlink out of the repository,
// no device or FIFO, size caps). Helm's own loader follows symlinks.
func loadChart(ctx context.Context, tree *workspace.Tree, h *repoconfig.Helm) (chart.Charter, [][]byte, error) {
	chrt, err := tree.Chart(ctx, h.Chart, workspace.ChartLimits{})
	if err != nil {
		return nil, nil, err
	}
	var values [][]byte
	for _, v := range h.Values {
		b, err := tree.ReadFile(ctx, v, maxValuesFile)
		if err != nil {
			return nil, nil, fmt.Errorf("values file: %w", err)
		}
		values = append(values, b)
	}
	return chrt, values, nil
}

// recordedImages takes a deploy-only job's images from its recorded
// references (unit name → "tag@digest") into images (for imageValues) and
// out, and shows them in the states as built. It returns the failure if a
// unit with a docker action has no recorded image.
func recordedImages(units []repoconfig.Unit, recorded map[string]string, images map[string]build.Result, out *Outcome, e *emitter) *event.ErrorInfo {
	var missing []string
	for _, u := range units {
		if u.Docker == nil {
			continue
		}
		ref := recorded[u.Name]
		if ref == "" {
			missing = append(missing, u.Name)
			continue
		}
		tag, digest, _ := strings.Cut(ref, "@")
		images[u.Name] = build.Result{Tag: tag, Digest: digest}
		name := imageName(u.Docker.Tag)
		out.Artifacts[name] = ref
		out.Images[u.Name] = ref
		e.setBuilt(name, ref)
	}
	if len(missing) == 0 {
		return nil
	}
	return &event.ErrorInfo{Code: enumspb.StatusCode_DEPLOY_NO_MATCHING_BUILD,
		Message: "no built image to deploy for unit " + strings.Join(missing, ", ") +
			": the job whose images this deploy-only job deploys did not build it; Execute a build of the commit first"}
}

// prepare checks the commit out and renders its configuration, keeping
// only the units this push builds. Everything it and the later steps read
// from the checkout goes through the returned tree (closed by the caller).
func (p *Pipeline) prepare(ctx context.Context, j Job, dir string) (*repoconfig.Config, *workspace.Tree, *event.ErrorInfo) {
	if err := p.src.Checkout(ctx, dir, j.Owner, j.Name, j.Commit, j.Token); err != nil {
		return nil, nil, &event.ErrorInfo{Code: enumspb.StatusCode_INIT_UNKNOWN, Message: "could not check out the commit: " + err.Error()}
	}
	tree, err := workspace.Open(dir)
	if err != nil {
		return nil, nil, &event.ErrorInfo{Code: enumspb.StatusCode_INIT_UNKNOWN, Message: "could not open the checkout: " + err.Error()}
	}
	cfg, info := p.render(ctx, j, tree)
	if info != nil {
		tree.Close()
		return nil, nil, info
	}
	// Each unit's paths are compared with the commit it was last deployed
	// at (or the push's before); every base is diffed once.
	changedSince := map[string][]string{}
	changed := func(base string) []string {
		if c, ok := changedSince[base]; ok {
			return c
		}
		c, err := p.src.ChangedFiles(ctx, dir, j.Owner, j.Name, base, j.Commit, j.Token)
		if err != nil {
			c = nil // unknown: build
		}
		changedSince[base] = c
		return c
	}
	var units []repoconfig.Unit
	for _, u := range cfg.Units {
		if !u.MatchesBranch(j.Branch) {
			continue
		}
		if len(j.Units) > 0 && !slices.Contains(j.Units, u.Name) {
			continue
		}
		if len(u.Paths) > 0 && !j.Everything {
			base := j.Before
			if d, ok := j.Deployed[u.Name]; ok && d != "" {
				base = d
			}
			if c := changed(base); c != nil && !u.MatchesPaths(c) {
				continue
			}
		}
		units = append(units, u)
	}
	for _, name := range j.Units {
		if !slices.ContainsFunc(cfg.Units, func(u repoconfig.Unit) bool { return u.Name == name }) {
			tree.Close()
			return nil, nil, &event.ErrorInfo{Code: enumspb.StatusCode_DEPLOY_NO_MATCHING_BUILD,
				Message: fmt.Sprintf("unit %q is not in kube-git-deploy.toml at commit %.7s (units: %s)", name, j.Commit, strings.Join(unitNames(cfg.Units), ", "))}
		}
	}
	cfg.Units = units
	return cfg, tree, nil
}

// cacheSources returns, for each unit that pushes its image, the image
// its previous build pushed: the unit's tag rendered for the commit the
// unit was last deployed at (Job.Deployed), else for the push's before.
// The build reuses the steps whose cache that image carries (BuildKit
// exports it inline), so a runner with an empty build cache starts warm.
// A source that does not exist (a tag template that changed, an image
// never pushed) is skipped by the build; a file that cannot be read or
// rendered for the previous commit gives no sources.
func (p *Pipeline) cacheSources(ctx context.Context, j Job, tree *workspace.Tree, units []repoconfig.Unit) map[string][]string {
	sources := map[string][]string{}
	byCommit := map[string][]repoconfig.Unit{}
	for _, u := range units {
		if u.Docker == nil || !u.Docker.Push {
			continue
		}
		prev := j.Before
		if d := j.Deployed[u.Name]; d != "" {
			prev = d
		}
		if prev != "" && strings.Trim(prev, "0") != "" { // GitHub's before of a new branch is all zeros
			byCommit[prev] = append(byCommit[prev], u)
		}
	}
	if len(byCommit) == 0 {
		return sources
	}
	src, err := tree.ReadFile(ctx, repoconfig.FileName, repoconfig.MaxFileSize)
	if err != nil {
		return sources
	}
	for prev, us := range byCommit {
		cfg, err := repoconfig.Parse(src, repoconfig.Vars{SHA: prev, Branch: j.Branch, Tag: j.Tag, Ref: j.Ref, Owner: j.Owner, Name: j.Name})
		if err != nil {
			continue
		}
		for _, u := range us {
			for _, pu := range cfg.Units {
				if pu.Name == u.Name && pu.Docker != nil {
					sources[u.Name] = []string{pu.Docker.Tag}
				}
			}
		}
	}
	return sources
}

// render reads kube-git-deploy.toml safely, renders and checks it.
func (p *Pipeline) render(ctx context.Context, j Job, tree *workspace.Tree) (*repoconfig.Config, *event.ErrorInfo) {
	src, err := tree.ReadFile(ctx, repoconfig.FileName, repoconfig.MaxFileSize)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, &event.ErrorInfo{Code: enumspb.StatusCode_CONFIG_FILE_NOT_FOUND_ERR,
			Message: repoconfig.FileName + " not found at the repository root"}
	case err != nil:
		return nil, &event.ErrorInfo{Code: enumspb.StatusCode_CONFIG_FILE_PARSING_ERR, Message: "could not read " + repoconfig.FileName + ": " + err.Error()}
	}
	cfg, err := repoconfig.Parse(src, repoconfig.Vars{SHA: j.Commit, Branch: j.Branch, Tag: j.Tag, Ref: j.Ref, Owner: j.Owner, Name: j.Name})
	if err == nil {
		err = cfg.CheckFiles(tree.FS())
	}
	if err != nil {
		return nil, &event.ErrorInfo{Code: enumspb.StatusCode_CONFIG_FILE_PARSING_ERR, Message: err.Error(),
			Suggestions: []event.Suggestion{{Code: enumspb.SuggestionCode_CONFIG_CHECK_FILE_PATH, Action: "Fix " + repoconfig.FileName + " and push again"}}}
	}
	return cfg, nil
}

func unitNames(units []repoconfig.Unit) []string {
	names := make([]string, len(units))
	for i, u := range units {
		names[i] = u.Name
	}
	return names
}

func planOf(units []repoconfig.Unit) event.Plan {
	var p event.Plan
	for _, u := range units {
		if u.Docker != nil {
			p.Artifacts = append(p.Artifacts, event.Artifact{Name: imageName(u.Docker.Tag), Context: u.Docker.Directory, Dockerfile: u.Docker.DockerfilePath()})
		}
		if u.Helm != nil {
			p.Releases++
		}
	}
	return p
}

// imageName is an image reference without its tag ("registry/app:1" →
// "registry/app"); a port colon before the last slash is kept.
func imageName(ref string) string {
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i]
	}
	return ref
}

// imageValues returns the unit's set values with the built image injected
// as image.repository and image.tag (and image.digest when known), unless
// the file sets them itself.
func imageValues(u repoconfig.Unit, images map[string]build.Result) map[string]string {
	set := map[string]string{}
	if res, ok := images[u.Name]; ok {
		name := imageName(res.Tag)
		set["image.repository"] = name
		set["image.tag"] = strings.TrimPrefix(res.Tag, name+":")
		if res.Digest != "" {
			set["image.digest"] = res.Digest
		}
	}
	for k, v := range u.Helm.Set {
		set[k] = v
	}
	return set
}

func buildError(err error) *event.ErrorInfo {
	var be *build.Error
	if errors.As(err, &be) {
		// The message carries the cause: "read push output" alone does not
		// tell the user what went wrong (found by localstack/faults).
		info := &event.ErrorInfo{Code: be.Code, Message: be.Error()}
		if be.Code == enumspb.StatusCode_BUILD_DOCKER_UNKNOWN && engineLost(err) {
			// The Docker Engine went away in the middle of the build or
			// push (stopped, crashed, restarted): say so, as a failed
			// connection at the start of a step already does.
			info.Code = enumspb.StatusCode_BUILD_DOCKER_DAEMON_NOT_RUNNING
			info.Message = "the Docker daemon stopped answering during the build (" + be.Error() + "): check that it runs, or set DOCKER_HOST to a reachable daemon, and push again"
		}
		switch info.Code {
		case enumspb.StatusCode_BUILD_USER_ERROR:
			info.Suggestions = []event.Suggestion{{Code: enumspb.SuggestionCode_FIX_USER_BUILD_ERR, Action: "Fix the Dockerfile or the build context and push again"}}
		case enumspb.StatusCode_BUILD_DOCKER_DAEMON_NOT_RUNNING:
			info.Suggestions = []event.Suggestion{{Code: enumspb.SuggestionCode_CHECK_DOCKER_RUNNING, Action: "Start the Docker daemon or set DOCKER_HOST for the runner"}}
		case enumspb.StatusCode_BUILD_PUSH_ACCESS_DENIED:
			info.Suggestions = []event.Suggestion{{Code: enumspb.SuggestionCode_DOCKER_AUTH_CONFIGURE, Action: "Give the runner push access to the registry"}}
		}
		return info
	}
	return &event.ErrorInfo{Code: enumspb.StatusCode_BUILD_UNKNOWN, Message: err.Error()}
}

// engineLost reports whether a build step's error is the Docker Engine's
// connection breaking mid-stream (its output cut short, the connection
// reset or refused) rather than a failure the engine reported.
func engineLost(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

func deployError(err error) *event.ErrorInfo {
	var de *deploy.Error
	if errors.As(err, &de) {
		// With its cause (Helm's reason, the rollback), not only the step.
		info := &event.ErrorInfo{Code: de.Code, Message: de.Error()}
		if de.Code == enumspb.StatusCode_DEPLOY_CLUSTER_CONNECTION_ERR {
			info.Suggestions = []event.Suggestion{{Code: enumspb.SuggestionCode_CHECK_CLUSTER_CONNECTION, Action: "Check the runner's KUBECONFIG and that the cluster is reachable"}}
		}
		return info
	}
	return &event.ErrorInfo{Code: enumspb.StatusCode_DEPLOY_UNKNOWN, Message: err.Error()}
}

func rolloutError(err error) *event.ErrorInfo {
	var re *rollout.Error
	if errors.As(err, &re) {
		info := &event.ErrorInfo{Code: re.Code, Message: re.Msg}
		switch re.Code {
		case enumspb.StatusCode_STATUSCHECK_IMAGE_PULL_ERR:
			info.Suggestions = []event.Suggestion{{Code: enumspb.SuggestionCode_CHECK_CONTAINER_IMAGE, Action: "Check the image reference and that the cluster can pull it"}}
		case enumspb.StatusCode_STATUSCHECK_CONTAINER_RESTARTING:
			info.Suggestions = []event.Suggestion{{Code: enumspb.SuggestionCode_CHECK_CONTAINER_LOGS, Action: "Check the container's logs"}}
		}
		return info
	}
	return &event.ErrorInfo{Code: enumspb.StatusCode_STATUSCHECK_UNKNOWN, Message: err.Error()}
}
