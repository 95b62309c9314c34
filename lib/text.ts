// Text rules shared by every input path.

/**
 * Whether a string is valid Unicode (String.prototype.isWellFormed, which the
 * ES2023 lib does not declare). A lone UTF-16 surrogate has no UTF-8 form:
 * ClickHouse refuses it in an insert, or it reaches a query as U+FFFD and
 * compares with another value than written.
 */
export function isWellFormedText(text: string): boolean {
  return (text as string & { isWellFormed(): boolean }).isWellFormed();
}
