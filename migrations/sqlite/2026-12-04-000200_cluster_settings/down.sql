DROP TABLE cluster_settings;
