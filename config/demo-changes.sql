-- Changes `make demo` applies while `inlet run` follows the shop: they land in change files
-- beside the LOAD files, and the demo query replays both.
BEGIN;
-- A new order with two items.
INSERT INTO public.orders (id, customer_id, status, ordered_at, currency, shipping_address, note)
VALUES (100001, 1, 'paid', now(), 'EUR', 'Hauptstraße 1, Zürich', 'placed during the demo');
INSERT INTO public.order_items (order_id, line_no, product_id, quantity, unit_price, discount)
VALUES (100001, 1, 22, 3, 247.17, 0), (100001, 2, 142, 1, 249.97, 0.10);
COMMIT;
-- Pending orders ship; a price changes; one order is cancelled and its items removed.
UPDATE public.orders SET status = 'shipped' WHERE status = 'pending';
UPDATE public.products SET price = price * 1.10 WHERE id = 22;
DELETE FROM public.order_items WHERE order_id = (SELECT min(id) FROM public.orders WHERE status = 'paid');
UPDATE public.orders SET status = 'cancelled' WHERE id = (SELECT min(id) FROM public.orders WHERE status = 'paid');
