-- Sample data for `make demo`: a small web shop.
--
--   customers    1,000 rows
--   products       200 rows  (numeric(10,2) price, jsonb attributes, text[] tags)
--   orders       5,000 rows  (timestamptz, enum status)
--   order_items ~12,500 rows (composite primary key)
--
-- Deterministic (no random()): every run builds the same rows, so the demo's output is
-- reproducible. Idempotent: it drops and recreates everything it owns.
--
--   psql -h 127.0.0.1 -p 54329 -U postgres -d shop -v ON_ERROR_STOP=1 -f config/demo-data.sql

\set ON_ERROR_STOP on
SET client_min_messages = warning;

BEGIN;

DROP TABLE IF EXISTS public.order_items, public.orders, public.products, public.customers CASCADE;
DROP TYPE IF EXISTS public.order_status;

CREATE TYPE public.order_status AS ENUM
    ('pending', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded');

CREATE TABLE public.customers (
    id             bigint      PRIMARY KEY,
    email          text        NOT NULL UNIQUE,
    full_name      text        NOT NULL,
    country        char(2)     NOT NULL,
    city           varchar(64),
    is_active      boolean     NOT NULL DEFAULT true,
    loyalty_points integer     NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL
);

CREATE TABLE public.products (
    id          integer       PRIMARY KEY,
    sku         varchar(32)   NOT NULL UNIQUE,
    name        text          NOT NULL,
    description text,
    price       numeric(10,2) NOT NULL CHECK (price >= 0),
    attributes  jsonb         NOT NULL DEFAULT '{}'::jsonb,
    tags        text[]        NOT NULL DEFAULT '{}',
    in_stock    boolean       NOT NULL DEFAULT true,
    created_at  timestamptz   NOT NULL
);

CREATE TABLE public.orders (
    id               bigint              PRIMARY KEY,
    customer_id      bigint              NOT NULL REFERENCES public.customers (id),
    status           public.order_status NOT NULL,
    ordered_at       timestamptz         NOT NULL,
    shipped_on       date,
    currency         char(3)             NOT NULL DEFAULT 'EUR',
    shipping_address text,
    note             text
);

CREATE TABLE public.order_items (
    order_id   bigint        NOT NULL REFERENCES public.orders (id) ON DELETE CASCADE,
    line_no    integer       NOT NULL,
    product_id integer       NOT NULL REFERENCES public.products (id),
    quantity   integer       NOT NULL CHECK (quantity > 0),
    unit_price numeric(10,2) NOT NULL,
    discount   numeric(4,2)  NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, line_no)
);

CREATE INDEX orders_customer_id_idx ON public.orders (customer_id);
CREATE INDEX order_items_product_id_idx ON public.order_items (product_id);

-- customers ---------------------------------------------------------------------------------
INSERT INTO public.customers (id, email, full_name, country, city, is_active, loyalty_points, created_at)
SELECT i,
       format('%s.%s%s@example.com', lower(fn), lower(ln), i),
       fn || ' ' || ln,
       c.country,
       CASE WHEN i % 17 = 0 THEN NULL ELSE c.city END,
       i % 23 <> 0,
       (i * 37) % 5000,
       timestamptz '2022-01-01 08:00:00+00' + (i * interval '17 hours 13 minutes')
FROM generate_series(1, 1000) AS i
CROSS JOIN LATERAL (SELECT
    (ARRAY['Anna', 'Ben', 'Chloé', 'David', 'Eva', 'François', 'Grace', 'Hiro', 'Ines', 'Jonas',
           'Kasia', 'Liam', 'Maja', 'Noah', 'Olivia', 'Pedro', 'Rūta', 'Sven', 'Tomás', 'Zoë'])[1 + i % 20] AS fn,
    (ARRAY['Smith', 'Müller', 'García', 'Rossi', 'Dubois', 'Nowak', 'Jensen', 'Tanaka', 'Silva',
           'O''Brien', 'Novák', 'Andersson', 'Kowalski'])[1 + (i * 7) % 13] AS ln) AS names
CROSS JOIN LATERAL (SELECT
    (ARRAY['DE', 'FR', 'ES', 'IT', 'NL', 'PL', 'SE', 'IE', 'PT', 'JP'])[1 + (i * 3) % 10] AS country,
    (ARRAY['Berlin', 'Paris', 'Madrid', 'Milano', 'Utrecht', 'Kraków', 'Göteborg', 'Cork',
           'Porto', 'Ōsaka'])[1 + (i * 3) % 10] AS city) AS c;

-- products ----------------------------------------------------------------------------------
INSERT INTO public.products (id, sku, name, description, price, attributes, tags, in_stock, created_at)
SELECT i,
       format('%s-%s', upper(left(kind, 3)), lpad(i::text, 5, '0')),
       initcap(colour) || ' ' || kind || ' ' || size,
       CASE WHEN i % 9 = 0 THEN NULL
            ELSE format('A %s %s made of %s. Model %s.', colour, lower(kind), material, i) END,
       round((4.99 + (i * 7919 % 25000) / 100.0)::numeric, 2),
       jsonb_build_object(
           'colour', colour,
           'size', size,
           'material', material,
           'weight_g', 150 + (i * 31) % 2000,
           'dimensions_cm', jsonb_build_object('w', 10 + i % 40, 'h', 5 + i % 25, 'd', 2 + i % 10),
           'eco', i % 4 = 0),
       CASE WHEN i % 11 = 0 THEN '{}'::text[]
            ELSE ARRAY[lower(kind), colour] || CASE WHEN i % 4 = 0 THEN ARRAY['eco'] ELSE '{}' END
                                            || CASE WHEN i % 6 = 0 THEN ARRAY['sale'] ELSE '{}' END END,
       i % 13 <> 0,
       timestamptz '2021-06-01 00:00:00+00' + (i * interval '2 days 3 hours')
FROM generate_series(1, 200) AS i
CROSS JOIN LATERAL (SELECT
    (ARRAY['Mug', 'Backpack', 'Lamp', 'Notebook', 'Jacket', 'Kettle', 'Chair', 'Scarf'])[1 + i % 8] AS kind,
    (ARRAY['red', 'blue', 'green', 'black', 'white', 'ochre', 'teal'])[1 + (i * 5) % 7] AS colour,
    (ARRAY['S', 'M', 'L', 'XL'])[1 + (i * 3) % 4] AS size,
    (ARRAY['cotton', 'steel', 'oak', 'recycled plastic', 'ceramic', 'wool'])[1 + (i * 7) % 6] AS material) AS p;

-- orders ------------------------------------------------------------------------------------
INSERT INTO public.orders (id, customer_id, status, ordered_at, shipped_on, currency, shipping_address, note)
SELECT i,
       1 + (i * 7919) % 1000,
       s.status,
       o.ordered_at,
       CASE WHEN s.status IN ('shipped', 'delivered', 'refunded')
            THEN (o.ordered_at AT TIME ZONE 'UTC')::date + 1 + i % 4 END,
       CASE WHEN i % 10 = 0 THEN 'USD' ELSE 'EUR' END,
       format('%s Market Street, %s', 1 + i % 250, 10000 + (i * 13) % 89999),
       CASE WHEN i % 50 = 0 THEN 'Please leave at the door'
            WHEN i % 77 = 0 THEN 'Gift — no invoice in the parcel'
            ELSE NULL END
FROM generate_series(1, 5000) AS i
CROSS JOIN LATERAL (SELECT
    timestamptz '2024-01-01 00:00:00+00' + (i * interval '1 hour 43 minutes 7 seconds') AS ordered_at) AS o
CROSS JOIN LATERAL (SELECT (CASE
    WHEN i > 4900 THEN 'pending'
    WHEN i % 29 = 0 THEN 'cancelled'
    WHEN i % 41 = 0 THEN 'refunded'
    WHEN i > 4700 THEN 'paid'
    WHEN i > 4500 THEN 'shipped'
    ELSE 'delivered' END)::public.order_status AS status) AS s;

-- order_items: 1 to 4 lines per order ------------------------------------------------------
INSERT INTO public.order_items (order_id, line_no, product_id, quantity, unit_price, discount)
SELECT o.id,
       l.line_no,
       p.id,
       1 + (o.id * l.line_no) % 3,
       p.price,
       CASE WHEN 'sale' = ANY (p.tags) THEN 0.15 WHEN (o.id + l.line_no) % 20 = 0 THEN 0.05 ELSE 0 END
FROM public.orders AS o
CROSS JOIN LATERAL generate_series(1, 1 + (o.id * 31) % 4) AS l(line_no)
JOIN public.products AS p ON p.id = 1 + (o.id * 13 + l.line_no * 71) % 200;

COMMIT;

ANALYZE public.customers, public.products, public.orders, public.order_items;

SELECT 'customers' AS "table", count(*) AS "rows" FROM public.customers
UNION ALL SELECT 'products', count(*) FROM public.products
UNION ALL SELECT 'orders', count(*) FROM public.orders
UNION ALL SELECT 'order_items', count(*) FROM public.order_items;
