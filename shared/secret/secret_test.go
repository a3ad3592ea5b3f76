package secret

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// testKey returns a deterministic key distinct for every seed.
func testKey(seed byte) []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = seed + byte(i)
	}
	return k
}

func mustBox(t testing.TB, primary []byte, previous ...[]byte) *Box {
	t.Helper()
	b, err := NewBox(primary, previous...)
	if err != nil {
		t.Fatalf("NewBox: %v", err)
	}
	return b
}

// zeroReader makes nonces deterministic so fuzzing workers agree on the
// seed corpus.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestNewBox(t *testing.T) {
	tests := []struct {
		name     string
		primary  []byte
		previous [][]byte
		wantErr  error
	}{
		{name: "primary-only", primary: testKey(1)},
		{name: "with-previous", primary: testKey(1), previous: [][]byte{testKey(2), testKey(3)}},
		{name: "same-key-twice", primary: testKey(1), previous: [][]byte{testKey(1)}},
		{name: "nil-primary", primary: nil, wantErr: ErrKey},
		{name: "short-primary", primary: testKey(1)[:16], wantErr: ErrKey},
		{name: "long-primary", primary: append(testKey(1), 0), wantErr: ErrKey},
		{name: "short-previous", primary: testKey(1), previous: [][]byte{testKey(2)[:31]}, wantErr: ErrKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewBox(tt.primary, tt.previous...)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("NewBox() error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	key := testKey(0xf0) // has bytes that differ between std and URL base64
	tests := []struct {
		name    string
		in      string
		want    []byte
		wantErr bool
	}{
		{name: "std", in: base64.StdEncoding.EncodeToString(key), want: key},
		{name: "std-raw", in: base64.RawStdEncoding.EncodeToString(key), want: key},
		{name: "url", in: base64.URLEncoding.EncodeToString(key), want: key},
		{name: "url-raw", in: base64.RawURLEncoding.EncodeToString(key), want: key},
		{name: "white-space", in: " " + base64.StdEncoding.EncodeToString(key) + "\n", want: key},
		{name: "empty", in: "", wantErr: true},
		{name: "short", in: base64.StdEncoding.EncodeToString(key[:31]), wantErr: true},
		{name: "long", in: base64.StdEncoding.EncodeToString(append(key, 1)), wantErr: true},
		{name: "not-base64", in: "not a key, but a sentence with a secret-ish word", wantErr: true},
		{name: "raw-bytes", in: string(key), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKey(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrKey) {
					t.Fatalf("ParseKey() error = %v, want ErrKey", err)
				}
				if trimmed := strings.TrimSpace(tt.in); trimmed != "" && strings.Contains(err.Error(), trimmed) {
					t.Errorf("ParseKey() error %q echoes the input", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKey() error = %v", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("ParseKey() = %x, want %x", got, tt.want)
			}
		})
	}
}

func TestSealFormat(t *testing.T) {
	b := mustBox(t, testKey(1))
	plaintext := []byte("webhook secret")
	sealed, err := b.Seal(plaintext, []byte("aad"))
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if got, want := len(sealed), 1+4+12+len(plaintext)+16; got != want {
		t.Errorf("len(sealed) = %d, want %d", got, want)
	}
	if sealed[0] != 1 {
		t.Errorf("version byte = %d, want 1", sealed[0])
	}
	if bytes.Contains(sealed, plaintext) {
		t.Errorf("sealed value contains the plaintext")
	}
	again, err := b.Seal(plaintext, []byte("aad"))
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if bytes.Equal(sealed[5:17], again[5:17]) {
		t.Errorf("two seals used the same nonce %x", sealed[5:17])
	}
}

func TestOpen(t *testing.T) {
	oldKey, newKey, otherKey := testKey(1), testKey(2), testKey(3)
	oldBox := mustBox(t, oldKey)
	rotated := mustBox(t, newKey, oldKey)
	aad := []byte("repositories/alice~app/webhook_secret")
	plaintext := []byte("s3cr3t")

	sealedOld, err := oldBox.Seal(plaintext, aad)
	if err != nil {
		t.Fatal(err)
	}
	sealedNew, err := rotated.Seal(plaintext, aad)
	if err != nil {
		t.Fatal(err)
	}
	sealedEmpty, err := rotated.Seal(nil, aad)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		return c
	}

	tests := []struct {
		name    string
		box     *Box
		sealed  []byte
		aad     []byte
		want    []byte
		wantErr bool
	}{
		{name: "same-box", box: oldBox, sealed: sealedOld, aad: aad, want: plaintext},
		{name: "rotated-opens-old", box: rotated, sealed: sealedOld, aad: aad, want: plaintext},
		{name: "rotated-opens-new", box: rotated, sealed: sealedNew, aad: aad, want: plaintext},
		{name: "empty-plaintext", box: rotated, sealed: sealedEmpty, aad: aad, want: nil},
		{name: "old-box-unknown-key-id", box: oldBox, sealed: sealedNew, aad: aad, wantErr: true},
		{name: "unrelated-box", box: mustBox(t, otherKey), sealed: sealedOld, aad: aad, wantErr: true},
		{name: "wrong-aad", box: rotated, sealed: sealedNew, aad: []byte("repositories/mallory~app/webhook_secret"), wantErr: true},
		{name: "missing-aad", box: rotated, sealed: sealedNew, aad: nil, wantErr: true},
		{name: "tampered-version", box: rotated, sealed: flip(sealedNew, 0), aad: aad, wantErr: true},
		{name: "tampered-key-id", box: rotated, sealed: flip(sealedNew, 2), aad: aad, wantErr: true},
		{name: "tampered-nonce", box: rotated, sealed: flip(sealedNew, 8), aad: aad, wantErr: true},
		{name: "tampered-ciphertext", box: rotated, sealed: flip(sealedNew, 17), aad: aad, wantErr: true},
		{name: "tampered-tag", box: rotated, sealed: flip(sealedNew, len(sealedNew)-1), aad: aad, wantErr: true},
		{name: "truncated", box: rotated, sealed: sealedNew[:len(sealedNew)-1], aad: aad, wantErr: true},
		{name: "header-only", box: rotated, sealed: sealedNew[:17], aad: aad, wantErr: true},
		{name: "empty", box: rotated, sealed: nil, aad: aad, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.box.Open(tt.sealed, tt.aad)
			if tt.wantErr {
				if !errors.Is(err, ErrDecrypt) {
					t.Fatalf("Open() = %q, %v; want ErrDecrypt", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open() error = %v", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("Open() = %q, want %q", got, tt.want)
			}
		})
	}
}

// FuzzOpen checks that Open never panics and that no input other than the
// exact sealed value and aad opens.
func FuzzOpen(f *testing.F) {
	box := mustBox(f, testKey(1), testKey(2))
	box.rand = zeroReader{}
	previous := mustBox(f, testKey(2))
	previous.rand = zeroReader{}

	aad := []byte("repositories/alice~app/webhook_secret")
	plaintext := []byte("s3cr3t")
	sealed, err := box.Seal(plaintext, aad)
	if err != nil {
		f.Fatal(err)
	}
	sealedPrev, err := previous.Seal(plaintext, aad)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed, aad)
	f.Add(sealedPrev, aad)
	f.Add(sealed[:len(sealed)-1], aad)
	f.Add(sealed, []byte("repositories/bob~app/webhook_secret"))
	f.Add([]byte{}, []byte{})
	f.Add([]byte{1, 0, 0, 0, 0}, aad)

	f.Fuzz(func(t *testing.T, in, inAAD []byte) {
		got, err := box.Open(in, inAAD)
		valid := bytes.Equal(inAAD, aad) && (bytes.Equal(in, sealed) || bytes.Equal(in, sealedPrev))
		if !valid {
			if err == nil {
				t.Fatalf("Open(%x, %q) succeeded with %q on a mutated input", in, inAAD, got)
			}
			if !errors.Is(err, ErrDecrypt) {
				t.Fatalf("Open() error = %v, want ErrDecrypt", err)
			}
			return
		}
		if err != nil || !bytes.Equal(got, plaintext) {
			t.Fatalf("Open(valid) = %q, %v; want %q", got, err, plaintext)
		}
	})
}

func TestParseKeys(t *testing.T) {
	k1 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, KeySize))
	k2 := base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{2}, KeySize))
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{"", 0, false},
		{k1, 1, false},
		{k1 + ", " + k2, 2, false},
		{k1 + ",,", 1, false},
		{k1 + ",short", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseKeys(tt.in)
		if (err != nil) != tt.wantErr || len(got) != tt.want {
			t.Errorf("ParseKeys(%q) = %d keys, %v; want %d, error %v", tt.in, len(got), err, tt.want, tt.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "short") {
			t.Errorf("error %q echoes the key", err)
		}
	}
}
