function unique(words) {
  return [...new Set(words)];
}
module.exports = { unique };
