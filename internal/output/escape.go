// SPDX-License-Identifier: Apache-2.0

package output

import (
	"encoding/base64"
	"unicode"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// appendHuman appends b for a terminal: printable text as is, everything
// that could move the cursor, change the terminal or split the line shown
// as an escape (\n, \t, \x1b, \u{202e}), bytes that are not UTF-8 as \xNN,
// and a backslash doubled so the escapes stay unambiguous.
func appendHuman(dst, b []byte) []byte {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '\\':
				dst = append(dst, '\\', '\\')
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c < 0x20 || c == 0x7f:
				dst = append(dst, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
		case unicode.IsPrint(r):
			dst = append(dst, b[i:i+size]...)
		default:
			// C1 controls, bidi overrides, zero-width and other format runes.
			dst = append(dst, '\\', 'u', '{')
			dst = appendHex(dst, uint32(r))
			dst = append(dst, '}')
		}
		i += size
	}
	return dst
}

func appendHex(dst []byte, v uint32) []byte {
	started := false
	for shift := 28; shift >= 0; shift -= 4 {
		d := (v >> uint(shift)) & 0xf
		if d != 0 || started || shift < 16 {
			dst = append(dst, hexDigits[d])
			started = true
		}
	}
	return dst
}

// appendJSONString appends b as a JSON string. Invalid UTF-8 becomes
// U+FFFD; callers that must stay faithful check utf8.Valid and also write
// the raw bytes in base64 (the *_b64 fields).
func appendJSONString(dst, b []byte) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == 0x7f:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			dst = append(dst, b[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

func appendBase64(dst, b []byte) []byte {
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"')
}

// AppendEscaped appends b escaped for a terminal, as the human view does.
func AppendEscaped(dst, b []byte) []byte { return appendHuman(dst, b) }
