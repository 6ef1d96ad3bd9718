-- docker/compose.yaml: a small MySQL shop for the shop-mysql task.
CREATE TABLE shop.products (
    id int unsigned PRIMARY KEY,
    name varchar(100) NOT NULL,
    price decimal(10,2) NOT NULL,
    tags set('new','sale','eco') NOT NULL DEFAULT '',
    updated_at datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);
INSERT INTO shop.products (id, name, price, tags) VALUES
    (1, 'kettle', 29.90, 'new'), (2, 'teapot', 19.50, 'sale,eco'), (3, 'mug', 6.00, '');
