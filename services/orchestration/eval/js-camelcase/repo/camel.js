function camelCase(text) {
  return text.split(/\s+/).map((w) => w[0].toUpperCase() + w.slice(1).toLowerCase()).join('');
}
module.exports = { camelCase };
