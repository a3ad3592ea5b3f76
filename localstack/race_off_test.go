//go:build !race

package localstack_test

// raceEnabled: see race_on_test.go.
const raceEnabled = false
