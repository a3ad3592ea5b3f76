package store

import (
	"context"
	"fmt"

	"cloud.google.com/go/firestore"
)

// Trigger names one of a repository's automatic triggers.
type Trigger string

// The triggers, named as Skaffold's control API names its phases.
const (
	TriggerBuild  Trigger = "build"
	TriggerDeploy Trigger = "deploy"
	TriggerSync   Trigger = "sync"
)

func (t Trigger) field() (string, bool) {
	switch t {
	case TriggerBuild:
		return "auto_build", true
	case TriggerDeploy:
		return "auto_deploy", true
	case TriggerSync:
		return "auto_sync", true
	}
	return "", false
}

// SetTrigger switches one of the repository's automatic triggers in a
// transaction. It reports whether the value changed: setting a trigger to
// the value it already has writes nothing and returns false. It returns
// ErrNotFound if the repository is not tracked.
func (s *Store) SetTrigger(ctx context.Context, owner, name string, t Trigger, enabled bool) (changed bool, err error) {
	if err := checkRepo(owner, name); err != nil {
		return false, fmt.Errorf("set trigger: %w", err)
	}
	field, ok := t.field()
	if !ok {
		return false, fmt.Errorf("set trigger %q: %w", t, ErrInvalid)
	}
	ref := s.repoRef(owner, name)
	err = s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		changed = false
		snap, err := tx.Get(ref)
		if err != nil {
			return err
		}
		var d repositoryDoc
		if err := snap.DataTo(&d); err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		cur := d.Triggers.triggers()
		old := map[Trigger]bool{TriggerBuild: cur.AutoBuild, TriggerDeploy: cur.AutoDeploy, TriggerSync: cur.AutoSync}[t]
		if old == enabled {
			return nil
		}
		changed = true
		return tx.Update(ref, []firestore.Update{{FieldPath: firestore.FieldPath{"triggers", field}, Value: enabled}})
	})
	if err != nil {
		return false, fmt.Errorf("set auto %s of %s/%s: %w", t, owner, name, translate(err))
	}
	return changed, nil
}
