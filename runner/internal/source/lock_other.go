//go:build !unix

package source

import "context"

// lockFile does nothing where flock is missing: a cache directory must not
// be shared between processes there.
func lockFile(context.Context, string) (func(), error) { return func() {}, nil }
