-- What the processed copy does to each face: box, blur, pixelate or none. Part of
-- the duplicate key, like mode and threshold; rows from before drew boxes.
ALTER TABLE submissions ADD COLUMN mark TEXT NOT NULL DEFAULT 'box';
