function flatten(values) {
  return [].concat(...values);
}
module.exports = { flatten };
