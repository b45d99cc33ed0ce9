// Prompt templates: text with `{{variable}}` placeholders.

const PLACEHOLDER = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;

/** The template's variables, each once, in order of first use. */
export function variables(template: string): string[] {
  return [...new Set(Array.from(template.matchAll(PLACEHOLDER), (m) => m[1]))];
}

/**
 * The template with every placeholder replaced by its value from `vars`; the names of the
 * variables `vars` lacks, if any, instead.
 */
export function fill(template: string, vars: Record<string, string>): { text: string } | { missing: string[] } {
  const missing = variables(template).filter((name) => !Object.hasOwn(vars, name));
  if (missing.length > 0) {
    return { missing };
  }
  return { text: template.replace(PLACEHOLDER, (_, name: string) => vars[name]) };
}
