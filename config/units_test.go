package config

import (
	"errors"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in      string
		want    int64
		wantErr error
	}{
		{"", 0, nil},
		{"0", 0, nil},
		{"1048576", 1 << 20, nil},
		{"512B", 512, nil},
		{"512MiB", 512 << 20, nil},
		{"512 MiB", 512 << 20, nil},
		{"1GiB", 1 << 30, nil},
		{"1.5GiB", 3 << 29, nil},
		{"2TiB", 2 << 40, nil},
		{"4KiB", 4096, nil},
		{"1kB", 1000, nil},
		{"200MB", 200e6, nil},
		{"3GB", 3e9, nil},
		{"1TB", 1e12, nil},
		{"0.5kB", 500, nil},
		{"1.0001B", 1, nil}, // rounded down to whole bytes
		{"8388607TiB", 8388607 << 40, nil},
		{"8388608TiB", 0, ErrRange},
		{"9223372036854775808", 0, ErrRange},
		{"-1", 0, ErrRange},
		{"-1GiB", 0, ErrRange},
		{"lots", 0, ErrSyntax},
		{"1e9", 0, ErrSyntax},
		{"0x10", 0, ErrSyntax},
		{"1_000", 0, ErrSyntax},
		{"12XB", 0, ErrSyntax},
		{"1gib", 0, ErrSyntax},
		{"1KB", 0, ErrSyntax},
		{"1.", 0, ErrSyntax},
		{".5GiB", 0, ErrSyntax},
		{"GiB", 0, ErrSyntax},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseSize(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ParseSize(%q) = %d, %v; want error %v", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestFormatSizeRoundTrips(t *testing.T) {
	t.Parallel()
	for _, n := range []int64{0, 1, 1000, 1024, 1536, 512 << 20, 3 << 30, 5 << 40, 1<<40 + 1} {
		s := FormatSize(n)
		back, err := ParseSize(s)
		if err != nil || back != n {
			t.Errorf("FormatSize(%d) = %q, parses back to %d, %v", n, s, back, err)
		}
	}
	if got := FormatSize(512 << 20); got != "512MiB" {
		t.Errorf("FormatSize(512MiB) = %q", got)
	}
}

func TestParseCPU(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in      string
		want    float64
		wantErr error
	}{
		{"", 0, nil},
		{"0.5", 0.5, nil},
		{"2", 2, nil},
		{"0.01", 0.01, nil},
		{"16.25", 16.25, nil},
		{"0", 0, ErrRange},
		{"0.0", 0, ErrRange},
		{"0.001", 0, ErrRange},
		{"-1", 0, ErrRange},
		{"2000000", 0, ErrRange},
		{"half", 0, ErrSyntax},
		{"50%", 0, ErrSyntax},
		{"1e3", 0, ErrSyntax},
		{"NaN", 0, ErrSyntax},
		{"Inf", 0, ErrSyntax},
		{".5", 0, ErrSyntax},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseCPU(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ParseCPU(%q) = %v, %v; want error %v", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseCPU(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in      string
		want    time.Duration
		wantErr error
	}{
		{"0", 0, nil},
		{"0s", 0, nil},
		{"30s", 30 * time.Second, nil},
		{"1m30s", 90 * time.Second, nil},
		{"250ms", 250 * time.Millisecond, nil},
		{"-1s", 0, ErrRange},
		{"-5", 0, ErrRange},
		{"30", 0, ErrSyntax},
		{"soon", 0, ErrSyntax},
		{"", 0, ErrSyntax},
		{"1d", 0, ErrSyntax},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseDuration(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ParseDuration(%q) = %v, %v; want error %v", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
		})
	}
}
