package render

import (
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// Duration formats d compactly: tenths of a second under 10 seconds
// ("3.2s"), whole seconds under a minute ("42s"), then minutes and seconds
// ("2m05s") and hours and minutes ("1h02m").
func Duration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds()))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	default:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
}

// Age formats how long ago t was, in its largest whole unit: "45s",
// "12m", "5h", "3d". A zero t is "-".
func Age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(0, int(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

// ShortSHA is a commit's first 7 digits, as git shows it.
func ShortSHA(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

// timeOf converts a timestamp; nil or unset is the zero time.
func timeOf(ts *timestamppb.Timestamp) time.Time {
	if ts == nil || (ts.GetSeconds() == 0 && ts.GetNanos() == 0) {
		return time.Time{}
	}
	return ts.AsTime()
}

// orDash returns s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Field is one line of a key-value block.
type Field struct {
	Key, Value string
}

// writeFields writes fields as "Key  value" lines, the values aligned.
func writeFields(w io.Writer, p Palette, fields []Field) error {
	width := 0
	for _, f := range fields {
		width = max(width, visibleLen(f.Key))
	}
	var b strings.Builder
	for _, f := range fields {
		b.WriteString(p.Bold(f.Key))
		b.WriteString(strings.Repeat(" ", width-visibleLen(f.Key)+2))
		b.WriteString(f.Value)
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}
