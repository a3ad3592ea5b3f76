// Package render writes what kgd shows a person: tables of repositories
// and jobs, a job's details, its log, a repository's state, and a job's
// Skaffold v2 events printed the way `skaffold dev` prints an iteration
// to a terminal. Colours are ANSI escapes, used only when a Palette is
// enabled (ColorEnabled decides).
package render

import (
	"strings"
	"unicode/utf8"
)

// ColorEnabled reports whether output gets colours: only on a terminal,
// never with --no-color, never with NO_COLOR set to anything (no-color.org)
// and never for TERM=dumb.
func ColorEnabled(isTerminal, noColorFlag bool, getenv func(string) string) bool {
	return isTerminal && !noColorFlag && getenv("NO_COLOR") == "" && getenv("TERM") != "dumb"
}

// Palette colours text, or leaves it alone when disabled (the zero
// Palette).
type Palette struct {
	enabled bool
}

// NewPalette returns a Palette that colours when enabled.
func NewPalette(enabled bool) Palette { return Palette{enabled: enabled} }

// Enabled reports whether p colours.
func (p Palette) Enabled() bool { return p.enabled }

const reset = "\x1b[0m"

func (p Palette) wrap(code, s string) string {
	if !p.enabled || s == "" {
		return s
	}
	return "\x1b[" + code + "m" + s + reset
}

// Bold makes s bold.
func (p Palette) Bold(s string) string { return p.wrap("1", s) }

// Faint dims s.
func (p Palette) Faint(s string) string { return p.wrap("2", s) }

// Red colours s red (failures).
func (p Palette) Red(s string) string { return p.wrap("31", s) }

// Green colours s green (successes).
func (p Palette) Green(s string) string { return p.wrap("32", s) }

// Yellow colours s yellow (warnings, waiting).
func (p Palette) Yellow(s string) string { return p.wrap("33", s) }

// Blue colours s blue (in progress).
func (p Palette) Blue(s string) string { return p.wrap("34", s) }

// Cyan colours s cyan (headings, names).
func (p Palette) Cyan(s string) string { return p.wrap("36", s) }

// Status colours a job or phase status by what it means: succeeded green,
// failed red, canceled and waiting yellow, running blue.
func (p Palette) Status(status string) string {
	return p.statusColor(status)(status)
}

func (p Palette) statusColor(status string) func(string) string {
	switch strings.ToLower(status) {
	case "succeeded", "success", "complete", "ready":
		return p.Green
	case "failed", "failure", "error":
		return p.Red
	case "canceled", "cancelled", "pending", "queued", "terminated":
		return p.Yellow
	case "running", "inprogress", "in progress", "started":
		return p.Blue
	}
	return func(s string) string { return s }
}

// visibleLen is the number of runes of s a terminal shows: ANSI colour
// escapes take no room.
func visibleLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j + 1
			continue
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
		n++
	}
	return n
}
