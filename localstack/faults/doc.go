// Package faults breaks the running system for real and checks that it
// recovers: each test in this package starts the whole stack
// (package localstack: the real functions, runner and API binaries, the
// emulators, a registry, a Kubernetes control plane, a Docker Engine and
// the GitHub stand-in), pushes commits the way a user does, and then
// kills a runner process, stops a daemon or restarts an emulator in the
// middle of a job. The tests assert outcomes (what the job ended as,
// which Helm revisions exist, what runs in the cluster) and log how long
// recovery took; they never call the product's internals.
//
// The package holds only tests; it lives beside localstack because it
// drives the stack through the same helpers as its end-to-end test.
package faults
