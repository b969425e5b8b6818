function cartTotal(items, discount) {
  const sum = items.reduce((total, item) => total + item.price * item.quantity, 0);
  return sum - discount;
}
module.exports = { cartTotal };
