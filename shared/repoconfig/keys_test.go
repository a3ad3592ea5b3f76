package repoconfig

import (
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/google/go-cmp/cmp"
)

// keyLine is a key as scanKeys should find it: as MetaData.Keys lists it,
// with its line.
type keyLine struct {
	Key  string
	Line int
}

func TestScanKeysMatchesTOML(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []keyLine
	}{
		{
			name: "original form",
			doc:  "[api]\n[[docker]]\ndirectory = \"./api\"\n\n[[helm]]\nchart = \"x\"\n[ui]\n[[docker]]\n",
			want: []keyLine{{"api", 1}, {"docker", 2}, {"docker.directory", 3}, {"helm", 5}, {"helm.chart", 6}, {"ui", 7}, {"docker", 8}},
		},
		{
			name: "inline tables and arrays",
			doc: "a = {b = [{c = 1, d.e = 2}], f = {g = 3}}\n" +
				"[x.y]\nz.w = [\n  1, # comment ]\n  {v = 1},\n]\n" +
				"[[q]]\n[q.r]\ns = 1\n'lit'.\"q\\u0041\" = 2\n",
			want: []keyLine{
				{"a", 1}, {"a.b", 1}, {"a.b.c", 1}, {"a.b.d.e", 1}, {"a.f", 1}, {"a.f.g", 1},
				{"x.y", 2}, {"x.y.z.w", 3}, {"x.y.z.w.v", 5},
				{"q", 7}, {"q.r", 8}, {"q.r.s", 9}, {"q.r.lit.qA", 10},
			},
		},
		{
			name: "strings that look like keys",
			doc: "a = \"\"\"\n[b]\nc = 1\"\"\"\"\"\n" +
				"d = '''\n[e]'''\n" +
				"f = \"[g] # \\\" h = 1\"\n" +
				"i = 'j = 1' # k = 2\n" +
				"\"quoted key\" = 1\n" +
				"[ spaced . 'header' ]\n",
			want: []keyLine{{"a", 1}, {"d", 4}, {"f", 6}, {"i", 7}, {`"quoted key"`, 8}, {"spaced.header", 9}},
		},
		{
			name: "dates, CRLF and TOML 1.1 inline tables",
			doc:  "\ufeffa = 1979-05-27 07:32:00Z\r\nb = [1979-05-27, 07:32:00]\r\nc = {\n  d = 1,\n}\n",
			want: []keyLine{{"a", 1}, {"b", 2}, {"c", 3}, {"c.d", 4}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v map[string]any
			md, err := toml.Decode(tt.doc, &v)
			if err != nil {
				t.Fatalf("toml.Decode() error = %v", err)
			}
			keys, serr := scanKeys(tt.doc)
			if serr != nil {
				t.Fatalf("scanKeys() error = %v", serr.msg)
			}
			lines := newLineIndex(tt.doc)
			var got []keyLine
			for _, k := range keys {
				got = append(got, keyLine{toml.Key(k.key).String(), lines.line(k.off)})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("scanKeys() mismatch (-want +got):\n%s", diff)
			}
			var fromTOML []string
			for _, k := range md.Keys() {
				fromTOML = append(fromTOML, k.String())
			}
			var scanned []string
			for _, k := range got {
				scanned = append(scanned, k.Key)
			}
			if diff := cmp.Diff(fromTOML, scanned); diff != "" {
				t.Errorf("scanKeys() keys differ from MetaData.Keys() (-toml +scanKeys):\n%s", diff)
			}
		})
	}
}
