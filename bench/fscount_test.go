package bench

import "testing"

func TestCollectionPath(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"projects/p/databases/(default)/documents/jobs/j1", "jobs"},
		{"projects/p/databases/(default)/documents/jobs/j1/events/000001", "jobs/events"},
		{"projects/p/databases/(default)/documents/states/octo~app", "states"},
		{"", "?"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := collectionPath(tc.doc); got != tc.want {
				t.Errorf("collectionPath(%q) = %q, want %q", tc.doc, got, tc.want)
			}
		})
	}
}
