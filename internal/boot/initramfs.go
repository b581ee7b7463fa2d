package boot

import "errors"

// switchToImageRoot mounts the image's own root (root= on the kernel command
// line) and switches to it, for the fallback from an initramfs.
func (b *booter) switchToImageRoot() error {
	return errors.New("booting the image root from an initramfs is not supported by this build")
}
