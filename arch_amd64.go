package main

// auditArch is AUDIT_ARCH_X86_64: the filter sends on only native system
// calls; 32-bit ones (int 0x80) pass untouched.
const auditArch = 0xc000003e
