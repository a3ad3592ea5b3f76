//go:build race

package faults_test

// raceEnabled: the test binary was built with -race, and so are the
// binaries the tests run (a data race in one of them stops it).
const raceEnabled = true
