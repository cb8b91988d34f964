-- order_items first: it references products.
DROP TABLE order_items;
DROP TABLE products;
