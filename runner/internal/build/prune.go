package build

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/name"
)

// Prune removes from the daemon the local images of one image repository
// (a name without tag or digest, e.g. "localhost:5005/demo/hello"), except
// the keep most recently created images that carry one of its tags. It
// also removes the repository's build leftovers: images with no tag left
// (rebuilt under the same tag) whose only references are digests of this
// repository, which a push recorded.
//
// Images of other repositories are never removed: an image that also has
// a tag of another repository only loses this repository's tags, and an
// untagged image is a leftover only if a digest ties it to this
// repository. Images used by a container are left alone. Untagged parent
// layers of removed images go with them (PruneChildren).
//
// removed counts the images untagged or deleted. Prune does not
// coordinate with builds: run it after a job's build and push of the same
// repository, with keep at least 1, so the image just built stays.
func Prune(ctx context.Context, docker *client.Client, repository string, keep int) (removed int, err error) {
	if keep < 0 {
		return 0, fmt.Errorf("prune %s: keep %d is negative", repository, keep)
	}
	repo, err := name.NewRepository(repository)
	if err != nil {
		return 0, fmt.Errorf("prune %s: %w", repository, err)
	}
	want := repo.Name()
	// All images, filtered here: the daemon's "reference" filter matches
	// familiar names with path.Match, which is not an exact comparison.
	list, err := docker.ImageList(ctx, image.ListOptions{})
	if err != nil {
		return 0, fmt.Errorf("prune %s: list images: %w", repository, err)
	}

	type candidate struct {
		id      string
		refs    []string // this repository's tags, or digests of a leftover
		created time.Time
	}
	var tagged, leftovers []candidate
	for _, img := range list {
		var tags, digests []string
		others := 0
		for _, ref := range append(slices.Clone(img.RepoTags), img.RepoDigests...) {
			r, err := name.ParseReference(ref)
			switch {
			case err != nil: // "<none>:<none>"
			case r.Context().Name() != want:
				others++
			case slices.Contains(img.RepoTags, ref):
				tags = append(tags, ref)
			default:
				digests = append(digests, ref)
			}
		}
		switch {
		case len(tags) > 0:
			tagged = append(tagged, candidate{id: img.ID, refs: tags, created: time.Unix(img.Created, 0)})
		case len(digests) > 0 && others == 0 && !hasTag(img.RepoTags):
			leftovers = append(leftovers, candidate{id: img.ID, refs: digests})
		}
	}
	// Summary.Created has whole seconds; builds of one job come closer
	// together, so ask for the exact time.
	for i := range tagged {
		inspect, err := docker.ImageInspect(ctx, tagged[i].id)
		if err != nil {
			return 0, fmt.Errorf("prune %s: inspect %s: %w", repository, tagged[i].id, err)
		}
		if t, err := time.Parse(time.RFC3339Nano, inspect.Created); err == nil {
			tagged[i].created = t
		}
	}
	slices.SortStableFunc(tagged, func(a, b candidate) int { return b.created.Compare(a.created) })

	var errs []error
	remove := func(c candidate) {
		for _, ref := range c.refs {
			_, err := docker.ImageRemove(ctx, ref, image.RemoveOptions{PruneChildren: true})
			switch {
			case err == nil, cerrdefs.IsNotFound(err):
			case cerrdefs.IsConflict(err):
				return // in use by a container
			default:
				errs = append(errs, fmt.Errorf("remove %s: %w", ref, err))
				return
			}
		}
		removed++
	}
	for _, c := range tagged[min(keep, len(tagged)):] {
		remove(c)
	}
	for _, c := range leftovers {
		remove(c)
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("prune %s: %w", repository, err)
	}
	return removed, nil
}

// hasTag reports whether tags holds a real tag (not "<none>:<none>").
func hasTag(tags []string) bool {
	return slices.ContainsFunc(tags, func(t string) bool { return t != "<none>:<none>" })
}
