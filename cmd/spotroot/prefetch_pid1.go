//go:build pid1

package main

// As PID 1 the rest of the executable is read ahead from the first
// package initialisers on (internal/exeprefetch).
import _ "github.com/spotroot/spotroot/internal/exeprefetch"
