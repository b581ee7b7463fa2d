//go:build pid1

package kmod

import "io"

// userDecompressor, in the PID 1 build, runs the image's own xz or zstd
// (toolDecompressor). Only a kernel that cannot decompress its modules
// itself (before Linux 5.17, or without CONFIG_MODULE_DECOMPRESS) gets
// here, and a distribution that ships such a kernel with compressed
// modules ships the tools its own initramfs and udev unpack them with.
// From spotroot's initramfs this never runs: spotroot-initramfs stores
// the modules uncompressed.
func userDecompressor(r io.Reader, comp string) (io.ReadCloser, error) {
	return toolDecompressor(r, comp)
}
