package config

import _ "embed"

// Example is the documented configuration: every field with its default.
//
//go:embed example.yaml
var Example string
