package envelope

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Like encoding/json it replaces
// invalid UTF-8 with U+FFFD and escapes U+2028/U+2029; unlike it, it leaves
// <, > and & alone, since the payload is never embedded in HTML.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// truncate cuts s to at most max characters as the service counts them:
// UTF-16 code units, one per invalid byte (each becomes U+FFFD). It cuts on a
// rune boundary so the result stays valid where s was.
func truncate(s string, max int) string {
	// UTF-8 never takes fewer bytes than UTF-16 code units, so short strings
	// need no counting.
	if len(s) <= max {
		return s
	}
	n := 0
	for i, r := range s {
		w := 1
		if r >= 0x10000 {
			w = 2
		}
		if n+w > max {
			return s[:i]
		}
		n += w
	}
	return s
}

// appendTime writes t in UTC with seven fractional digits: RFC 3339 with the
// tick resolution of .NET, which is what the service parses it into.
func appendTime(b []byte, t time.Time) []byte {
	b = t.UTC().AppendFormat(b, "2006-01-02T15:04:05.0000000")
	return append(b, 'Z')
}

// appendDuration writes ns as a .NET TimeSpan, "[d.]hh:mm:ss.fffffff", the
// format the Breeze duration fields require.
func appendDuration(b []byte, ns uint64) []byte {
	ticks := ns / 100
	frac := ticks % 10_000_000
	secs := ticks / 10_000_000
	days := secs / 86400
	secs %= 86400
	if days > 0 {
		b = strconv.AppendUint(b, days, 10)
		b = append(b, '.')
	}
	b = appendPadded(b, secs/3600, 2)
	b = append(b, ':')
	b = appendPadded(b, secs/60%60, 2)
	b = append(b, ':')
	b = appendPadded(b, secs%60, 2)
	b = append(b, '.')
	return appendPadded(b, frac, 7)
}

func appendPadded(b []byte, v uint64, width int) []byte {
	var tmp [20]byte
	d := strconv.AppendUint(tmp[:0], v, 10)
	for i := len(d); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, d...)
}

// appendFloat writes a finite float the way encoding/json does. Callers must
// not pass NaN or ±Inf: JSON has no spelling for them.
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(b, f, format, -1, 64)
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

func appendHex(b []byte, id []byte) []byte {
	for _, x := range id {
		b = append(b, hexDigits[x>>4], hexDigits[x&0xf])
	}
	return b
}
