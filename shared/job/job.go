// Package job defines the job message: the contract between the functions
// that accept a push (or a user's Execute request) and the runner that builds
// and deploys it.
//
// A job is one commit of one repository to build and deploy. It travels
// through Pub/Sub as a versioned JSON body plus a few attributes for routing:
//
//	{"version":1,"job_id":"...","repository":"owner/name","ref":"refs/heads/main",
//	 "sha":"<40 hex>","before":"<40 hex or empty>","delivery_id":"<X-GitHub-Delivery>",
//	 "trigger":"push","published_at":"2026-01-02T15:04:05Z"}
//
// Jobs are delivered at least once, so a consumer must make a duplicate
// harmless; JobID is the idempotency key.
//
// Compatibility rules. The body is versioned: a reader rejects a version it
// does not know (see Decode), so incompatible changes need a new Version.
// Within a version, fields may only be added, and readers ignore fields they
// do not know, so a newer publisher can roll out before older runners.
package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Version is the version of the message body this package writes and the
// only one it reads.
const Version = 1

// MaxSize is the largest message body Decode accepts, in bytes. A valid
// message is far smaller (well under 8 KiB); the cap bounds the work a
// hostile or corrupt message can cause.
const MaxSize = 64 << 10

// Limits on individual fields.
const (
	// MaxJobIDLength is the maximum length of a job id, in bytes.
	MaxJobIDLength = 128
	// MaxRefLength is the maximum length of a ref, in bytes. Git itself has
	// no limit; GitHub limits branch names to about 255 bytes.
	MaxRefLength = 1024
	// MaxDeliveryIDLength is the maximum length of a delivery id, in
	// characters. GitHub delivery ids are 36-character GUIDs.
	MaxDeliveryIDLength = 100
)

// Ref prefixes of the two kinds of refs a job can build.
const (
	BranchPrefix = "refs/heads/"
	TagPrefix    = "refs/tags/"
)

// Trigger says what caused a job.
type Trigger string

// The known triggers.
const (
	// TriggerPush is a GitHub push webhook delivery; DeliveryID is the
	// delivery's X-GitHub-Delivery header and is required.
	TriggerPush Trigger = "push"
	// TriggerExecute is a user's Execute request through the Skaffold
	// control API; DeliveryID may be empty.
	TriggerExecute Trigger = "execute"
)

// TriggerOf returns the message trigger of a recorded job whose trigger
// is recorded: push for a push, execute for every job a person started
// (Execute, or the job API's rerun, deploy and rollback), whose record,
// not its message, says how it runs.
func TriggerOf(recorded string) Trigger {
	if recorded == string(TriggerPush) {
		return TriggerPush
	}
	return TriggerExecute
}

// Attribute keys set on every published job message, for routing and
// filtering without decoding the body.
const (
	AttrVersion    = "version"
	AttrRepository = "repository"
	AttrJobID      = "job_id"
	AttrTrigger    = "trigger"
)

// ErrInvalid is wrapped by every error that reports a message that is not a
// valid job: malformed JSON, an unsupported version, an oversized body or a
// field that breaks the rules of Validate. Test for it with errors.Is.
var ErrInvalid = errors.New("invalid job message")

// FieldError reports which field of a message is invalid and why. It wraps
// ErrInvalid. The offending value is not included (it may be large or
// hostile), except for short enumerations such as version and trigger.
type FieldError struct {
	// Field is the JSON name of the field, for example "sha".
	Field string
	// Reason says what is wrong, for example "must be 40 lowercase hex digits".
	Reason string
}

// Error implements error.
func (e *FieldError) Error() string {
	return fmt.Sprintf("%s: %s %s", ErrInvalid, e.Field, e.Reason)
}

// Unwrap returns ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Message is one job: build and deploy SHA of Repository, reached through Ref.
type Message struct {
	// Version is the body version; it must equal Version.
	Version int `json:"version"`
	// JobID identifies the job and is the idempotency key for consumers:
	// 1–128 characters of [A-Za-z0-9_-].
	JobID string `json:"job_id"`
	// Repository is the GitHub repository as "owner/name".
	Repository string `json:"repository"`
	// Ref is the full ref that was pushed: "refs/heads/<branch>" or
	// "refs/tags/<tag>".
	Ref string `json:"ref"`
	// SHA is the commit to build: 40 lowercase hex digits (GitHub always
	// sends lowercase; uppercase is rejected rather than normalized so one
	// commit has exactly one spelling in job records and image tags).
	SHA string `json:"sha"`
	// Before is the commit the ref pointed to before the push, 40 lowercase
	// hex digits (all zeros for a new ref), or empty when unknown.
	Before string `json:"before"`
	// DeliveryID is GitHub's X-GitHub-Delivery header of the webhook that
	// caused the job. Required when Trigger is TriggerPush.
	DeliveryID string `json:"delivery_id"`
	// Trigger says what caused the job.
	Trigger Trigger `json:"trigger"`
	// PublishedAt is when the job was published. It must be set.
	PublishedAt time.Time `json:"published_at"`
}

// Validate reports whether m is a valid job message. It returns nil or a
// *FieldError (wrapping ErrInvalid) for the first invalid field, checked in
// the order of the struct's fields.
func (m Message) Validate() error {
	if m.Version != Version {
		return &FieldError{"version", fmt.Sprintf("%d is not supported (this build reads version %d)", m.Version, Version)}
	}
	if err := validateJobID(m.JobID); err != nil {
		return err
	}
	if err := validateRepository(m.Repository); err != nil {
		return err
	}
	if err := validateRef(m.Ref); err != nil {
		return err
	}
	if !isSHA(m.SHA) {
		return &FieldError{"sha", "must be 40 lowercase hex digits"}
	}
	if m.Before != "" && !isSHA(m.Before) {
		return &FieldError{"before", "must be empty or 40 lowercase hex digits"}
	}
	switch m.Trigger {
	case TriggerPush, TriggerExecute:
	case "":
		return &FieldError{"trigger", "is required"}
	default:
		return &FieldError{"trigger", fmt.Sprintf("%s is not one of %q, %q", brief(string(m.Trigger)), TriggerPush, TriggerExecute)}
	}
	if err := validateDeliveryID(m.DeliveryID, m.Trigger); err != nil {
		return err
	}
	if m.PublishedAt.IsZero() {
		return &FieldError{"published_at", "is required"}
	}
	// RFC 3339 cannot represent these: json.Marshal fails for the first
	// two and silently drops the seconds of the third.
	if y := m.PublishedAt.Year(); y < 0 || y > 9999 {
		return &FieldError{"published_at", "year must be between 0 and 9999"}
	}
	if _, off := m.PublishedAt.Zone(); off <= -24*3600 || off >= 24*3600 || off%60 != 0 {
		return &FieldError{"published_at", "zone offset must be whole minutes, less than 24 hours"}
	}
	return nil
}

// Branch returns the branch name when Ref is a branch ("feature/x" for
// "refs/heads/feature/x"), else "".
func (m Message) Branch() string {
	b, ok := strings.CutPrefix(m.Ref, BranchPrefix)
	if !ok {
		return ""
	}
	return b
}

// Tag returns the tag name when Ref is a tag ("v1.2.0" for
// "refs/tags/v1.2.0"), else "".
func (m Message) Tag() string {
	t, ok := strings.CutPrefix(m.Ref, TagPrefix)
	if !ok {
		return ""
	}
	return t
}

// ShortSHA returns the first 7 characters of SHA, as git abbreviates it.
func (m Message) ShortSHA() string {
	if len(m.SHA) <= 7 {
		return m.SHA
	}
	return m.SHA[:7]
}

// Attributes returns the Pub/Sub attributes for m: version, repository,
// job_id and trigger.
func (m Message) Attributes() map[string]string {
	return map[string]string{
		AttrVersion:    strconv.Itoa(m.Version),
		AttrRepository: m.Repository,
		AttrJobID:      m.JobID,
		AttrTrigger:    string(m.Trigger),
	}
}

// Encode validates m and returns its message body and Pub/Sub attributes.
// The error wraps ErrInvalid when m is not valid.
func Encode(m Message) (data []byte, attrs map[string]string, err error) {
	if err := m.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op("encode", m.JobID), err)
	}
	data, err = json.Marshal(m)
	if err != nil {
		return nil, nil, fmt.Errorf("encode job %s: %w", m.JobID, err)
	}
	if len(data) > MaxSize {
		// Unreachable with the field limits above; kept so Encode can never
		// produce a body Decode refuses.
		return nil, nil, fmt.Errorf("encode job %s: %w: body is %d bytes, more than %d", m.JobID, ErrInvalid, len(data), MaxSize)
	}
	return data, m.Attributes(), nil
}

// Decode parses and validates a message body. Every error wraps ErrInvalid.
//
// Decoding is strict where it matters for safety and lenient where it
// matters for compatibility:
//   - bodies over MaxSize, malformed JSON, trailing data and a wrong JSON
//     type for a known field are rejected;
//   - the version is read first, and any version other than Version is
//     rejected naming the version, before the rest of the body is looked at;
//   - unknown fields are ignored (no DisallowUnknownFields), so fields added
//     within a version do not break older readers;
//   - as with encoding/json everywhere, key matching is case-insensitive and
//     for a duplicated key the last one wins;
//   - the result must pass Validate.
func Decode(data []byte) (Message, error) {
	if len(data) > MaxSize {
		return Message{}, fmt.Errorf("decode job: %w: body is %d bytes, more than %d", ErrInvalid, len(data), MaxSize)
	}
	var head struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return Message{}, decodeError(err)
	}
	if head.Version == nil {
		return Message{}, fmt.Errorf("decode job: %w", &FieldError{"version", "is required"})
	}
	if *head.Version != Version {
		return Message{}, fmt.Errorf("decode job: %w", &FieldError{"version", fmt.Sprintf("%d is not supported (this build reads version %d)", *head.Version, Version)})
	}
	// published_at is parsed here rather than by time.Time's UnmarshalJSON,
	// whose error quotes the whole (possibly huge) value and not the field.
	var w struct {
		Message
		PublishedAt *string `json:"published_at"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		return Message{}, decodeError(err)
	}
	m := w.Message
	if w.PublishedAt != nil {
		if err := m.PublishedAt.UnmarshalText([]byte(*w.PublishedAt)); err != nil {
			return Message{}, fmt.Errorf("decode job: %w", &FieldError{"published_at", "must be an RFC 3339 time"})
		}
	}
	if err := m.Validate(); err != nil {
		return Message{}, fmt.Errorf("%s: %w", op("decode", m.JobID), err)
	}
	return m, nil
}

func validateJobID(id string) error {
	if id == "" {
		return &FieldError{"job_id", "is required"}
	}
	if len(id) > MaxJobIDLength {
		return &FieldError{"job_id", fmt.Sprintf("is longer than %d characters", MaxJobIDLength)}
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !isAlnum(c) && c != '-' && c != '_' {
			return &FieldError{"job_id", "may only contain A-Z, a-z, 0-9, '-' and '_'"}
		}
	}
	return nil
}

// validateRepository checks "owner/name" against GitHub's rules: the owner
// is 1–39 letters, digits or single hyphens, neither starting nor ending
// with a hyphen; the name is 1–100 of letters, digits, '.', '-' and '_',
// and not "." or "..".
func validateRepository(repo string) error {
	if repo == "" {
		return &FieldError{"repository", "is required"}
	}
	owner, name, ok := strings.Cut(repo, "/")
	if !ok {
		return &FieldError{"repository", `must be "owner/name"`}
	}
	if !validOwner(owner) {
		return &FieldError{"repository", "owner must be 1-39 letters, digits or single hyphens, not starting or ending with a hyphen"}
	}
	if !validRepoName(name) {
		return &FieldError{"repository", `name must be 1-100 letters, digits, '.', '-' or '_', and not "." or ".."`}
	}
	return nil
}

func validOwner(s string) bool {
	if len(s) == 0 || len(s) > 39 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '-' {
			if s[i-1] == '-' {
				return false
			}
			continue
		}
		if !isAlnum(c) {
			return false
		}
	}
	return true
}

func validRepoName(s string) bool {
	if len(s) == 0 || len(s) > 100 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '.' && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// validateRef applies the rules of git check-ref-format to the whole ref,
// after requiring a refs/heads/ or refs/tags/ prefix with a non-empty rest,
// and also rejects invalid UTF-8 and non-printable Unicode characters.
func validateRef(ref string) error {
	bad := func(reason string) error { return &FieldError{"ref", reason} }
	if ref == "" {
		return bad("is required")
	}
	if len(ref) > MaxRefLength {
		return bad(fmt.Sprintf("is longer than %d bytes", MaxRefLength))
	}
	rest, ok := strings.CutPrefix(ref, BranchPrefix)
	if !ok {
		rest, ok = strings.CutPrefix(ref, TagPrefix)
	}
	if !ok {
		return bad(`must start with "refs/heads/" or "refs/tags/"`)
	}
	if rest == "" {
		return bad("has an empty branch or tag name")
	}
	if !utf8.ValidString(ref) {
		return bad("is not valid UTF-8")
	}
	for _, r := range ref {
		if r < 0x20 || r == 0x7f {
			return bad("contains a control character")
		}
		if !unicode.IsPrint(r) {
			// Git allows these, but invisible and direction-changing
			// characters make a ref read as something it is not.
			return bad("contains a non-printable character")
		}
		switch r {
		case ' ', '~', '^', ':', '?', '*', '[', '\\':
			return bad(fmt.Sprintf("contains %q", r))
		}
	}
	switch {
	case strings.Contains(ref, ".."):
		return bad(`contains ".."`)
	case strings.Contains(ref, "@{"):
		return bad(`contains "@{"`)
	case strings.HasSuffix(ref, "/"):
		return bad(`ends with "/"`)
	case strings.HasSuffix(ref, "."):
		return bad(`ends with "."`)
	}
	for _, c := range strings.Split(rest, "/") {
		switch {
		case c == "":
			return bad(`contains "//"`)
		case strings.HasPrefix(c, "."):
			return bad(`has a component starting with "."`)
		case strings.HasSuffix(c, ".lock"):
			return bad(`has a component ending with ".lock"`)
		}
	}
	return nil
}

func validateDeliveryID(id string, t Trigger) error {
	if id == "" {
		if t == TriggerPush {
			return &FieldError{"delivery_id", "is required for a push"}
		}
		return nil
	}
	if !utf8.ValidString(id) {
		return &FieldError{"delivery_id", "is not valid UTF-8"}
	}
	if utf8.RuneCountInString(id) > MaxDeliveryIDLength {
		return &FieldError{"delivery_id", fmt.Sprintf("is longer than %d characters", MaxDeliveryIDLength)}
	}
	for _, r := range id {
		if !unicode.IsPrint(r) {
			return &FieldError{"delivery_id", "contains a non-printable character"}
		}
	}
	return nil
}

func isSHA(s string) bool {
	if len(s) != 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// decodeError turns an encoding/json error into one wrapping ErrInvalid,
// as a *FieldError when the error names a field of the wrong JSON type.
func decodeError(err error) error {
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && te.Field != "" {
		field := strings.TrimPrefix(te.Field, "Message.")
		return fmt.Errorf("decode job: %w", &FieldError{field, "must be a JSON " + jsonKind(te.Type)})
	}
	return fmt.Errorf("decode job: %w: %w", ErrInvalid, err)
}

// jsonKind names the JSON type that decodes into t.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "integer"
	default:
		return "value of type " + t.String()
	}
}

// op names an operation on a job for an error message, with the job id
// only when the id is valid (an invalid one may be long or hostile).
func op(verb, id string) string {
	if validateJobID(id) != nil {
		return verb + " job"
	}
	return verb + " job " + id
}

// brief quotes s for an error message, shortened to at most 32 bytes so a
// hostile value cannot flood logs.
func brief(s string) string {
	const max = 32
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	return strconv.Quote(s)
}
