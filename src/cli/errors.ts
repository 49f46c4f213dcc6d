// The CLI's own error kinds, apart from the commands so that main.ts can tell
// them without loading any command: each maps to an exit code.

/** Bad arguments: the message, the usage, exit 2. */
export class UsageError extends Error {}

/** A file the user gave that cannot be used: one line, exit 2. */
export class InputError extends Error {}
