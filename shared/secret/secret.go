// Package secret encrypts small values at rest (webhook secrets, OAuth
// tokens) with AES-256-GCM, so that a copy of the database alone reveals
// nothing.
//
// A sealed value is
//
//	version (1 byte, 1) | key id (4 bytes) | nonce (12 bytes) | ciphertext and tag
//
// where the key id is the first 4 bytes of SHA-256(key). The id lets Open
// pick the right key after a rotation: a Box seals with its primary key and
// opens with the primary or any previous key.
//
// Callers bind a sealed value to where it is stored by passing that place
// (for example the Firestore document path and field name) as additional
// authenticated data, so a sealed value copied to another document does not
// open there.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// KeySize is the length in bytes of every key: AES-256.
const KeySize = 32

// Layout of a sealed value.
const (
	version     byte = 1
	keyIDSize        = 4
	nonceSize        = 12
	tagSize          = 16
	headerSize       = 1 + keyIDSize + nonceSize
	minSealSize      = headerSize + tagSize
)

// ErrDecrypt reports that a sealed value cannot be opened: it is too short,
// has an unknown version or key id, was modified, or was sealed with other
// additional data. The reasons are deliberately not told apart.
var ErrDecrypt = errors.New("decrypt sealed value")

// ErrKey reports an unusable key: not 32 bytes, not base64, or two keys
// whose ids collide. Its messages never contain key material.
var ErrKey = errors.New("invalid encryption key")

type keyID [keyIDSize]byte

// Box seals and opens values. It is safe for concurrent use.
type Box struct {
	primaryID keyID
	aeads     map[keyID]cipher.AEAD
	rand      io.Reader // nonce source; crypto/rand except in tests
}

// NewBox returns a Box that seals with primary and opens values sealed with
// primary or any of previous (keys being rotated out). Every key must be
// exactly KeySize bytes. The key slices are not retained.
func NewBox(primary []byte, previous ...[]byte) (*Box, error) {
	b := &Box{aeads: make(map[keyID]cipher.AEAD), rand: rand.Reader}
	seen := make(map[keyID][sha256.Size]byte)
	for i, key := range append([][]byte{primary}, previous...) {
		if len(key) != KeySize {
			return nil, fmt.Errorf("new box: key %d is %d bytes, want %d: %w", i, len(key), KeySize, ErrKey)
		}
		sum := sha256.Sum256(key)
		id := keyID(sum[:keyIDSize])
		if other, ok := seen[id]; ok {
			if other == sum {
				continue // the same key listed twice
			}
			return nil, fmt.Errorf("new box: key %d has the same id as an earlier key: %w", i, ErrKey)
		}
		seen[id] = sum
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("new box: key %d: %w", i, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("new box: key %d: %w", i, err)
		}
		b.aeads[id] = aead
		if i == 0 {
			b.primaryID = id
		}
	}
	return b, nil
}

// ParseKey decodes a key written as standard or URL-safe base64, padded or
// not, surrounding white space ignored. It must decode to exactly KeySize
// bytes. Errors wrap ErrKey and never contain the input.
func ParseKey(s string) ([]byte, error) {
	return parseKey(s)
}

// ParseKeys parses a comma-separated list of keys (as ParseKey does each),
// such as the previous keys kept for rotation; an empty list is nil.
func ParseKeys(list string) ([][]byte, error) {
	var keys [][]byte
	for part := range strings.SplitSeq(list, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, err := parseKey(part)
		if err != nil {
			return nil, fmt.Errorf("key %d of the list: %w", len(keys)+1, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func parseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("parse key: empty: %w", ErrKey)
	}
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding,
		base64.URLEncoding, base64.RawURLEncoding,
	} {
		key, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("parse key: decodes to %d bytes, want %d: %w", len(key), KeySize, ErrKey)
		}
		return key, nil
	}
	return nil, fmt.Errorf("parse key: not standard or URL base64: %w", ErrKey)
}

// Seal encrypts plaintext with the primary key, binding it to aad, and
// returns a new slice in the format described in the package comment.
func (b *Box) Seal(plaintext, aad []byte) ([]byte, error) {
	out := make([]byte, headerSize, headerSize+len(plaintext)+tagSize)
	out[0] = version
	copy(out[1:], b.primaryID[:])
	nonce := out[1+keyIDSize : headerSize]
	if _, err := io.ReadFull(b.rand, nonce); err != nil {
		return nil, fmt.Errorf("seal: read nonce: %w", err)
	}
	return b.aeads[b.primaryID].Seal(out, nonce, plaintext, aad), nil
}

// Open decrypts a value made by Seal with any key of the Box and the same
// aad. Every failure wraps ErrDecrypt.
func (b *Box) Open(sealed, aad []byte) ([]byte, error) {
	if len(sealed) < minSealSize {
		return nil, fmt.Errorf("open: %d bytes is too short: %w", len(sealed), ErrDecrypt)
	}
	if sealed[0] != version {
		return nil, fmt.Errorf("open: unknown version %d: %w", sealed[0], ErrDecrypt)
	}
	aead, ok := b.aeads[keyID(sealed[1:1+keyIDSize])]
	if !ok {
		return nil, fmt.Errorf("open: unknown key id %x: %w", sealed[1:1+keyIDSize], ErrDecrypt)
	}
	plaintext, err := aead.Open(nil, sealed[1+keyIDSize:headerSize], sealed[headerSize:], aad)
	if err != nil {
		return nil, fmt.Errorf("open: %w", ErrDecrypt)
	}
	return plaintext, nil
}
