//go:build race

package localstack_test

// raceEnabled: the test binary was built with -race, so the binaries the
// end-to-end test runs are too (make test's build cache then serves them,
// and a data race in a real binary ends it: see TestEndToEnd).
const raceEnabled = true
