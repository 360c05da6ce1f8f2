package config

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// sizeUnits maps the unit suffixes accepted by ParseSize to their factor.
// IEC units are powers of 1024 and SI units powers of 1000, as their
// standards define them. PostgreSQL's own GUCs read "kB"/"MB" as powers of
// 1024; a limit here is a cgroup byte count, not a GUC, so the SI meaning is
// kept and the IEC spelling is the way to ask for powers of two.
var sizeUnits = map[string]int64{
	"":    1,
	"B":   1,
	"KiB": 1 << 10,
	"MiB": 1 << 20,
	"GiB": 1 << 30,
	"TiB": 1 << 40,
	"kB":  1e3,
	"MB":  1e6,
	"GB":  1e9,
	"TB":  1e12,
}

// sizeRE splits a size into its decimal number and unit. Only plain decimal
// digits are accepted: no sign, exponent, hex or digit separators, so that a
// typo never silently becomes a different limit.
var sizeRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?) ?([A-Za-z]*)$`)

// ErrSyntax is wrapped by ParseSize, ParseCPU and ParseDuration errors for
// values that are not numbers of the expected shape.
var ErrSyntax = errors.New("invalid syntax")

// ErrRange is wrapped by ParseSize, ParseCPU and ParseDuration errors for
// values that are well-formed but negative, zero where that is meaningless,
// or too large.
var ErrRange = errors.New("out of range")

// ParseSize parses a memory size such as "512MiB", "1.5GiB", "200MB" or
// "1048576" (bytes) into bytes. The empty string is 0, meaning unlimited.
// Fractions are allowed and rounded down to whole bytes.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		if strings.HasPrefix(s, "-") {
			return 0, fmt.Errorf("size %q is negative: %w", s, ErrRange)
		}
		return 0, fmt.Errorf("size %q is not a number with an optional unit (B, KiB, MiB, GiB, TiB, kB, MB, GB, TB): %w", s, ErrSyntax)
	}
	factor, ok := sizeUnits[m[2]]
	if !ok {
		return 0, fmt.Errorf("size %q has unknown unit %q (use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB): %w", s, m[2], ErrSyntax)
	}
	r, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return 0, fmt.Errorf("size %q: %w", s, ErrSyntax)
	}
	r.Mul(r, new(big.Rat).SetInt64(factor))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if !n.IsInt64() {
		return 0, fmt.Errorf("size %q does not fit in 64 bits: %w", s, ErrRange)
	}
	return n.Int64(), nil
}

// FormatSize renders bytes in the largest IEC unit that represents it
// exactly, so that a size printed by `check` reads back to the same value.
func FormatSize(n int64) string {
	units := []struct {
		name   string
		factor int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if n != 0 && n%u.factor == 0 {
			return strconv.FormatInt(n/u.factor, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// cpuRE admits a plain decimal number of CPUs.
var cpuRE = regexp.MustCompile(`^[0-9]+(?:\.[0-9]+)?$`)

// Bounds of a CPU limit. The kernel's CFS bandwidth control refuses a quota
// below 1ms per period; with the 100ms period the spawner uses that is 0.01
// CPU. The upper bound only keeps quota*period far from overflow.
const (
	minCPU = 0.01
	maxCPU = 1 << 20
)

// ParseCPU parses a CPU limit such as "0.5" or "2" (a number of CPUs). The
// empty string is 0, meaning unlimited; an explicit zero is rejected because
// it would read as "no CPU at all".
func ParseCPU(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	if !cpuRE.MatchString(s) {
		if strings.HasPrefix(s, "-") {
			return 0, fmt.Errorf("cpu %q is negative: %w", s, ErrRange)
		}
		return 0, fmt.Errorf("cpu %q is not a decimal number of CPUs such as 0.5 or 2: %w", s, ErrSyntax)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("cpu %q: %w", s, ErrSyntax)
	}
	switch {
	case v == 0:
		return 0, fmt.Errorf("cpu %q is zero; leave it empty for unlimited: %w", s, ErrRange)
	case v < minCPU:
		return 0, fmt.Errorf("cpu %q is below %v, the smallest CFS quota the kernel accepts (1ms per 100ms period): %w", s, minCPU, ErrRange)
	case v > maxCPU || math.IsInf(v, 0):
		return 0, fmt.Errorf("cpu %q is more than %d CPUs: %w", s, maxCPU, ErrRange)
	}
	return v, nil
}

// ParseDuration parses a Go duration such as "30s" or "1m30s". Negative
// durations are rejected; a bare number other than 0 is rejected by
// time.ParseDuration for lack of a unit.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	d, err := time.ParseDuration(s)
	if err != nil {
		if v, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			if v < 0 {
				return 0, fmt.Errorf("duration %q is negative: %w", s, ErrRange)
			}
			return 0, fmt.Errorf("duration %q has no unit (write e.g. %ss): %w", s, s, ErrSyntax)
		}
		return 0, fmt.Errorf("duration %q is not a duration such as 30s, 5m or 1h30m: %w", s, ErrSyntax)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q is negative: %w", s, ErrRange)
	}
	return d, nil
}
