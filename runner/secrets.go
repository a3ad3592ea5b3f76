package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http"
	"regexp"

	"google.golang.org/api/googleapi"
	"google.golang.org/api/secretmanager/v1"
)

// secretVersionName matches a Secret Manager secret version's resource
// name, as KGD_ENCRYPTION_KEY_SECRET and KGD_KUBECONFIG_SECRET take it.
var secretVersionName = regexp.MustCompile(`^projects/[a-z0-9.:-]{1,100}/secrets/[A-Za-z0-9_-]{1,255}/versions/(latest|[1-9][0-9]*)$`)

// maxSecretSize is Secret Manager's own limit on a secret version.
const maxSecretSize = 64 << 10

// secretAccessor reads secret versions from Secret Manager with the
// runner's own Google identity (on GCE, the VM's service account).
type secretAccessor struct{ svc *secretmanager.Service }

// access returns the payload of the secret version name.
func (a secretAccessor) access(ctx context.Context, name string) ([]byte, error) {
	resp, err := a.svc.Projects.Secrets.Versions.Access(name).Context(ctx).Do()
	if err != nil {
		var ge *googleapi.Error
		if errors.As(err, &ge) {
			switch ge.Code {
			case http.StatusForbidden:
				return nil, fmt.Errorf("read secret %s: permission denied: the runner's service account needs roles/secretmanager.secretAccessor on it", name)
			case http.StatusNotFound:
				return nil, fmt.Errorf("read secret %s: no such secret or version (add one: gcloud secrets versions add)", name)
			}
		}
		return nil, fmt.Errorf("read secret %s: %w", name, err)
	}
	if resp.Payload == nil {
		return nil, fmt.Errorf("read secret %s: empty answer", name)
	}
	data, err := base64.StdEncoding.DecodeString(resp.Payload.Data)
	if err != nil || len(data) > maxSecretSize {
		return nil, fmt.Errorf("read secret %s: malformed payload", name)
	}
	if want := resp.Payload.DataCrc32c; want != 0 && int64(crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))) != want {
		return nil, fmt.Errorf("read secret %s: payload checksum mismatch", name)
	}
	return data, nil
}
