// Rolldown options jco merges into its bundle of each component (`--bundle-config`).
// jco leaves only `wasi:*` imports external; the llmchat capabilities are component imports
// too, bound by componentize-js, so rolldown must not look for them on disk.
export default {
  external: [/^llmchat:/],
};
