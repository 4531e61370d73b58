-- verifyd PostgreSQL schema, version 5: gate keys start with the number's counter prefix
-- (`num:{app}:{number}:gate`, was `gate:{app}:{number}`), as the server now builds them.
UPDATE gates SET key = 'num:' || substr(key, 6) || ':gate' WHERE key LIKE 'gate:%';
