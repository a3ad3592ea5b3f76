package render

import (
	"io"
	"strings"
)

// table lays out rows in columns separated by two spaces, each as wide as
// its widest cell; cells may carry colour escapes, which take no room.
type table struct {
	header []string
	rows   [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer, p Palette) error {
	widths := make([]int, len(t.header))
	for i, h := range t.header {
		widths[i] = visibleLen(h)
	}
	for _, r := range t.rows {
		for i, c := range r {
			widths[i] = max(widths[i], visibleLen(c))
		}
	}
	var b strings.Builder
	line := func(cells []string, style func(string) string) {
		var l strings.Builder
		for i, c := range cells {
			if i > 0 {
				l.WriteString("  ")
			}
			l.WriteString(style(c))
			if i < len(cells)-1 {
				l.WriteString(strings.Repeat(" ", widths[i]-visibleLen(c)))
			}
		}
		b.WriteString(strings.TrimRight(l.String(), " "))
		b.WriteByte('\n')
	}
	line(t.header, p.Bold)
	for _, r := range t.rows {
		line(r, func(s string) string { return s })
	}
	_, err := io.WriteString(w, b.String())
	return err
}
