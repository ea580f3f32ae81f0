// ekg browser client
