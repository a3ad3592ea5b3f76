//go:build unix

package localstack

// ProcessEnv returns the environment the stack gives its binaries
// (functions, runner, API): loopback addresses of every part, the
// project, the encryption key. Benchmarks start extra copies of the
// binaries with it, e.g. to time a start to ready (bench/).
func (s *Stack) ProcessEnv() []string { return s.childEnv() }
